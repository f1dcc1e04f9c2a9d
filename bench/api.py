"""API latency on a big history: 1,000,000 messages across 10,000 conversations in Postgres, against the same
requests on 10,000 messages (100 conversations), in the same run (every user's token verified once first,
and cached for the run: a token lookup is the same work at either size, but more users would make more).

Loads each database with COPY (a user per 5 conversations, about 10 DMs each; each DM conversation 100
messages, stream positions interleaved across conversations as live traffic would leave them), starts a
``switchboard api`` process on each, and measures with C concurrent clients using bearer tokens (as phones
do; HTTP Basic would add an argon2 hash to every request), the two sizes alternating request by request kind:

- history: the newest page (limit 50) of a random conversation, and a page deep in it (``before``);
- sync: ``GET /v1/sync`` for a random user, from a cursor a tenth of the stream back (a phone offline for a
  while: about 100 of its messages at either size) and from the start of time (the first page of its ~1,000);

printing median and p99 latency, requests per second and the API process's CPU per request for each size,
the ratios 1M / 10k, and the plans Postgres chose on the big one.

    uv run python bench/api.py [--requests 2000] [--concurrency 8] [--repeats 2]

Needs a Postgres reachable as ``BENCH_PG_ADMIN_DSN`` (default: the local cluster's socket, as the current
user, as scripts/test sets it up). Run by hand; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api import reads  # noqa: E402
from bench.api_storm import cpu_seconds, start_api  # noqa: E402
from bench.database import BenchDatabase, explain, settle  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402
from switchboard.topics import Kind  # noqa: E402

PER_CONVERSATION = 100
#: The two sizes compared: conversations (100 messages each), users (a user per 5 conversations).
SIZES = {"10k": 100, "1M": 10_000}


def conversation_pairs(rng: random.Random, conversations: int) -> list[tuple[str, str]]:
    """``conversations`` distinct DMs between ``conversations / 5`` users (about 10 each)."""
    users = conversations // 5
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < conversations:
        a, b = rng.sample(range(users), 2)
        pairs.add((f"u{min(a, b):04d}", f"u{max(a, b):04d}"))
    return sorted(pairs)


def load(dsn: str, pairs: list[tuple[str, str]], rng: random.Random) -> tuple[dict[str, str], float]:
    """Users, tokens, conversations and messages by COPY; returns a token per user and the seconds taken."""
    started = time.monotonic()
    password_hash = accounts.hash_password("bench-password")  # one hash for everyone: argon2 is slow on purpose
    tokens = {f"u{i:04d}": "sbt_" + secrets.token_urlsafe(32) for i in range(len(pairs) // 5)}
    now = datetime.now(UTC)
    expires = now + timedelta(days=1)
    # Interleave conversations the way live traffic does: each global position picks a conversation.
    order = [c for c in range(len(pairs)) for _ in range(PER_CONVERSATION)]
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
        seqs = [0] * len(pairs)
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
        settle(connection)
    return tokens, time.monotonic() - started


async def measure(
    base: str,
    tokens: dict[str, str],
    make_path: Callable[[random.Random], tuple[str, str]],
    requests: int,
    concurrency: int,
) -> tuple[float, float, float]:
    """Median and p99 latency (ms) and requests per second of ``requests`` GETs from ``concurrency`` clients
    (bearer tokens of ``tokens``' users)."""
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


async def verify_tokens(base: str, tokens: dict[str, str]) -> None:
    """One request per token (``GET /v1/sync``, the cheapest), so the API process has verified them all."""
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
        for token in tokens.values():
            answer = await http.get("/v1/sync", headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()


def plans(url: str, user: str, conversation: str, behind: int) -> list[tuple[str, str]]:
    """The plan nodes Postgres picks for the API's own history and sync statements (what index serves them)."""
    a, b = conversation.split(":")[1:]
    queries = {
        "history page": (
            reads.history_statement(True, False, Kind.DM),
            {"conversation": conversation, "before": 60, "limit": 51, "member_a": a, "member_b": b, "members": 2},
        ),
        "sync messages": (reads.MESSAGES_AFTER_BY_CONVERSATION, {"user": user, "after": behind, "limit": 101}),
    }
    found = []
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for name, (statement, values) in queries.items():
                plan = explain(connection, statement, values)
                found.append((name, " / ".join(line.strip().split("  (")[0] for line in plan if "Scan" in line)))
    finally:
        engine.dispose()
    return found


@dataclass
class Target:
    """One size: its database, its API process and what the requests pick from."""

    label: str
    database: BenchDatabase
    pairs: list[tuple[str, str]]
    tokens: dict[str, str]
    api: subprocess.Popen[bytes] | None = None
    base: str = ""

    @property
    def head(self) -> int:
        return len(self.pairs) * PER_CONVERSATION

    def requests(self) -> dict[str, Callable[[random.Random], tuple[str, str]]]:
        """The four kinds of request, the same at every size."""
        users = sorted(self.tokens)

        def newest_page(r: random.Random) -> tuple[str, str]:
            a, b = r.choice(self.pairs)
            return a, f"/v1/conversations/dm:{a}:{b}/messages?limit=50"

        def deep_page(r: random.Random) -> tuple[str, str]:
            a, b = r.choice(self.pairs)
            return b, f"/v1/conversations/dm:{a}:{b}/messages?limit=50&before={r.randint(2, PER_CONVERSATION)}"

        def sync_recent(r: random.Random) -> tuple[str, str]:
            return r.choice(users), f"/v1/sync?since=v1.{self.head - self.head // 10}.0.0&limit=100"

        def sync_everything(r: random.Random) -> tuple[str, str]:
            return r.choice(users), "/v1/sync?since=v1.0.0.0&limit=100"

        return {
            "history, newest page (limit 50)": newest_page,
            "history, page before a random seq": deep_page,
            "sync, a tenth of the stream behind (limit 100)": sync_recent,
            "sync, from the start (first 100 of ~1,000)": sync_everything,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the four kinds at both sizes")
    args = parser.parse_args()
    rng = random.Random(1)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-api-"))
    targets: list[Target] = []
    try:
        for label, conversations in SIZES.items():
            database = BenchDatabase.create()
            targets.append(Target(label, database, conversation_pairs(rng, conversations), {}))
            engine = make_engine(database.url)
            upgrade(engine)
            engine.dispose()
            targets[-1].tokens, load_seconds = load(database.dsn, targets[-1].pairs, rng)
            print(f"{label}: loaded {targets[-1].head:,} messages in {load_seconds:.0f}s", flush=True)
        for target in targets:
            (workdir / target.label).mkdir()
            # Tokens cached for the whole run, each verified once below: at 1M the requests spread over 2,000
            # users, at 10k over 20, and a token lookup per request would be measured instead of the pages.
            target.api, target.base = start_api(
                target.database.url,
                workdir / target.label,
                workers=1,
                SWITCHBOARD_API__TOKEN_CACHE_SECONDS="3600",  # noqa: S106
            )
            asyncio.run(verify_tokens(target.base, target.tokens))
        print(f"{args.requests} requests per row, {args.concurrency} concurrent clients, bearer tokens")
        print(f"{'request':<48} {'size':>4} {'median':>9} {'p99':>9} {'req/s':>7} {'CPU/req':>9}")
        figures: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for _ in range(args.repeats):
            for kind in targets[0].requests():
                for target in targets:
                    assert target.api is not None
                    server = psutil.Process(target.api.pid)
                    make = target.requests()[kind]
                    asyncio.run(measure(target.base, target.tokens, make, args.requests // 10, args.concurrency))
                    cpu = cpu_seconds(server)
                    median, p99, rate = asyncio.run(
                        measure(target.base, target.tokens, make, args.requests, args.concurrency)
                    )
                    cpu_ms = (cpu_seconds(server) - cpu) * 1000 / args.requests
                    figures.setdefault((kind, target.label), []).append((median, p99, rate, cpu_ms))
                    print(
                        f"{kind:<48} {target.label:>4} {median:7.1f}ms {p99:7.1f}ms {rate:7.0f} {cpu_ms:7.2f}ms",
                        flush=True,
                    )
        print(f"ratios 1M / 10k (medians of the {args.repeats} repeats): median, p99, CPU per request")
        for kind in targets[0].requests():
            small, big = (
                [statistics.median(column) for column in zip(*figures[(kind, t.label)], strict=True)] for t in targets
            )
            print(f"{kind:<48} {big[0] / small[0]:5.2f} {big[1] / small[1]:5.2f} {big[3] / small[3]:5.2f}")
        print(f"load average {os.getloadavg()[0]:.2f}")
        big_target = targets[-1]
        a, b = big_target.pairs[0]
        for query, nodes in plans(big_target.database.url, a, f"dm:{a}:{b}", big_target.head - big_target.head // 10):
            print(f"plan, {query}: {nodes}")
    finally:
        for target in targets:
            if target.api is not None:
                target.api.terminate()
                target.api.wait()
            target.database.drop()


if __name__ == "__main__":
    main()
