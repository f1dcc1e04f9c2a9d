"""API latency on a big history: 1,000,000 messages across 10,000 conversations in Postgres.

Loads the rows with COPY (2,000 users, each DM conversation 100 messages, stream positions interleaved
across conversations as live traffic would leave them), starts ``switchboard api`` as its own process,
and measures with C concurrent clients using bearer tokens (as phones do; HTTP Basic would add an argon2
hash to every request):

- history: the newest page (limit 50) of a random conversation, and a page deep in it (``before``);
- sync: ``GET /v1/sync`` for a random user, from a cursor 10,000 messages back (a phone offline for a
  while) and from the start of time (the first page of everything);

printing median and p99 latency and requests per second for each, and the plans Postgres chose.

    uv run python bench/api.py [--requests 2000] [--concurrency 8]

Needs a Postgres reachable as ``BENCH_PG_ADMIN_DSN`` (default: the local cluster's socket, as the current
user, as scripts/test sets it up). Run by hand; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.api_storm import start_api  # noqa: E402
from bench.database import BenchDatabase  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402

USERS = 2_000
CONVERSATIONS = 10_000
PER_CONVERSATION = 100


def conversation_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """10,000 distinct DMs between 2,000 users (about 10 each)."""
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < CONVERSATIONS:
        a, b = rng.sample(range(USERS), 2)
        pairs.add((f"u{min(a, b):04d}", f"u{max(a, b):04d}"))
    return sorted(pairs)


def load(dsn: str, pairs: list[tuple[str, str]], rng: random.Random) -> tuple[dict[str, str], float]:
    """Users, tokens, conversations and messages by COPY; returns a token per user and the seconds taken."""
    started = time.monotonic()
    password_hash = accounts.hash_password("bench-password")  # one hash for everyone: argon2 is slow on purpose
    tokens = {f"u{i:04d}": "sbt_" + secrets.token_urlsafe(32) for i in range(USERS)}
    now = datetime.now(UTC)
    expires = now + timedelta(days=1)
    # Interleave conversations the way live traffic does: each global position picks a conversation.
    order = [c for c in range(CONVERSATIONS) for _ in range(PER_CONVERSATION)]
    rng.shuffle(order)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY users (name, password_hash, role, disabled, created_at) FROM STDIN") as copy:
            for name in tokens:
                copy.write_row((name, password_hash, "user", False, now))
        with cursor.copy("COPY api_tokens (token_hash, user_name, created_at, expires_at) FROM STDIN") as copy:
            for name, token in tokens.items():
                copy.write_row((hashlib.sha256(token.encode()).hexdigest(), name, now, expires))
        with cursor.copy("COPY conversations (id, kind, last_seq, created_at, updated_at) FROM STDIN") as copy:
            for a, b in pairs:
                copy.write_row((f"dm:{a}:{b}", "dm", PER_CONVERSATION, now, now))
        with cursor.copy("COPY dm_members (conversation_id, user_name) FROM STDIN") as copy:
            for a, b in pairs:
                copy.write_row((f"dm:{a}:{b}", a))
                copy.write_row((f"dm:{a}:{b}", b))
        columns = "conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at, stream_pos"
        seqs = [0] * CONVERSATIONS
        with cursor.copy(f"COPY messages ({columns}) FROM STDIN") as copy:
            for position, c in enumerate(order, start=1):
                a, b = pairs[c]
                seqs[c] += 1
                sender, to = (a, b) if position % 2 else (b, a)
                body = f"message {seqs[c]} of a chat that goes on for a while"
                copy.write_row(
                    (
                        f"dm:{a}:{b}",
                        seqs[c],
                        sender,
                        f"m{position}",
                        body,
                        f"dm/{to}/{sender}",
                        b"{}",
                        now - timedelta(seconds=len(order) - position),
                        position,
                    )
                )
        cursor.execute("UPDATE stream_positions SET position = %s WHERE name = 'messages'", (len(order),))
        connection.commit()
        cursor.execute("ANALYZE")
    return tokens, time.monotonic() - started


async def measure(
    base: str,
    tokens: dict[str, str],
    make_path: Callable[[random.Random], tuple[str, str]],
    requests: int,
    concurrency: int,
) -> tuple[float, float, float]:
    """Median and p99 latency (ms) and requests per second of ``requests`` GETs from ``concurrency`` clients."""
    latencies: list[float] = []
    rng = random.Random(7)
    work = [make_path(rng) for _ in range(requests)]

    async def client(share: list[tuple[str, str]]) -> None:
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
            for user, path in share:
                started = time.perf_counter()
                answer = await http.get(path, headers={"Authorization": f"Bearer {tokens[user]}"})
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")

    started = time.perf_counter()
    await asyncio.gather(*(client(work[i::concurrency]) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000, requests / elapsed


def plans(dsn: str, user: str, conversation: str) -> list[tuple[str, str]]:
    """The plan nodes Postgres picks for the history and sync queries (what index serves them)."""
    queries = {
        "history page": (
            "SELECT * FROM messages WHERE conversation_id = %s AND seq < %s ORDER BY seq DESC LIMIT 51",
            (conversation, 60),
        ),
        "sync messages": (
            "SELECT * FROM messages WHERE conversation_id IN (SELECT conversation_id FROM dm_members "
            "WHERE user_name = %s UNION ALL SELECT 'group:' || group_name FROM group_members WHERE user_name = %s) "
            "AND stream_pos > %s ORDER BY stream_pos LIMIT 101",
            (user, user, CONVERSATIONS * PER_CONVERSATION - 10_000),
        ),
    }
    found = []
    with psycopg.connect(dsn) as connection:
        for name, (query, params) in queries.items():
            rows = connection.execute(sql.SQL("EXPLAIN ") + sql.SQL(query), params).fetchall()  # type: ignore[arg-type]
            found.append((name, " / ".join(r[0].strip().split("  (")[0] for r in rows if "Scan" in r[0])))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rng = random.Random(1)
    database = BenchDatabase.create()
    url, dsn = database.url, database.dsn
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-api-"))
    api = None
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        pairs = conversation_pairs(rng)
        tokens, load_seconds = load(dsn, pairs, rng)
        print(
            f"loaded {CONVERSATIONS * PER_CONVERSATION:,} messages in {load_seconds:.0f}s",
            flush=True,
        )
        api, base = start_api(url, workdir, workers=1)

        head = CONVERSATIONS * PER_CONVERSATION

        def newest_page(r: random.Random) -> tuple[str, str]:
            a, b = r.choice(pairs)
            return a, f"/v1/conversations/dm:{a}:{b}/messages?limit=50"

        def deep_page(r: random.Random) -> tuple[str, str]:
            a, b = r.choice(pairs)
            return b, f"/v1/conversations/dm:{a}:{b}/messages?limit=50&before={r.randint(2, PER_CONVERSATION)}"

        def sync_recent(r: random.Random) -> tuple[str, str]:
            user = f"u{r.randrange(USERS):04d}"
            return user, f"/v1/sync?since=v1.{head - 10_000}.0.0&limit=100"

        def sync_everything(r: random.Random) -> tuple[str, str]:
            user = f"u{r.randrange(USERS):04d}"
            return user, "/v1/sync?since=v1.0.0.0&limit=100"

        print(f"{args.requests} requests per row, {args.concurrency} concurrent clients, bearer tokens")
        print(f"{'request':<44} {'median':>9} {'p99':>9} {'req/s':>8}")
        for label, make in (
            ("history, newest page (limit 50)", newest_page),
            ("history, page before a random seq", deep_page),
            ("sync, 10,000 messages behind (limit 100)", sync_recent),
            ("sync, from the start (first 100 of ~1,000)", sync_everything),
        ):
            median, p99, rate = asyncio.run(measure(base, tokens, make, args.requests, args.concurrency))
            print(f"{label:<44} {median:7.1f}ms {p99:7.1f}ms {rate:8.0f}")
        a, b = pairs[0]
        for query, nodes in plans(dsn, a, f"dm:{a}:{b}"):
            print(f"plan, {query}: {nodes}")
    finally:
        if api is not None:
            api.terminate()
            api.wait()
        database.drop()


if __name__ == "__main__":
    main()
