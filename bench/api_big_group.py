"""Sync for a member of a big group: the sync page's messages query, read conversation by conversation (what
Postgres runs now, ``reads.MESSAGES_AFTER_BY_CONVERSATION``) against the plain statement (``reads.MESSAGES_AFTER``,
what SQLite runs, and what Postgres ran before), on the same database in the same run.

Loads Postgres with one group of ``--messages`` messages (default 300,000) whose two members are alice and bob,
and 9 DMs of alice's with 100 messages each, positions interleaved at the end as live traffic would leave them.
Then, for alice, from three cursors (the start of time, the middle of the stream, 100 positions behind its
head), runs each statement ``--repeats`` times (limit 101, as a sync page of 100 asks) and prints the median
time per statement (from this client: the statement's round trip, Postgres's work included) and Postgres's own
execution time (EXPLAIN ANALYZE). Then it pages from the start, ``--pages`` sync pages of 100 with each statement,
as a phone's first sync would, and prints the time per page: the plain statement sorts every message past the
cursor in all of alice's conversations for each page, so a first sync costs pages x messages.

    uv run python bench/api_big_group.py [--messages 300000] [--repeats 20] [--pages 20]

Needs a Postgres reachable as ``BENCH_PG_ADMIN_DSN`` (default: the local cluster's socket, as the current user,
as scripts/test sets it up). Run by hand; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api import reads  # noqa: E402
from bench.database import BenchDatabase, explain, settle  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402

DMS = 9
PER_DM = 100
LIMIT = 101
STATEMENTS = {"per conversation (now)": reads.MESSAGES_AFTER_BY_CONVERSATION, "plain (before)": reads.MESSAGES_AFTER}


def load(dsn: str, messages: int) -> int:
    """The group, the DMs and their messages by COPY; returns the messages stream's head."""
    now = datetime.now(UTC)
    password_hash = accounts.hash_password("bench-password")
    peers = [f"peer{i}" for i in range(DMS)]
    head = messages + DMS * PER_DM
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY users (name, password_hash, role, disabled, created_at) FROM STDIN") as copy:
            for name in ["alice", "bob", *peers]:
                copy.write_row((name, password_hash, "user", False, now))
        cursor.execute("INSERT INTO groups (name, created_at) VALUES ('big', %s)", (now,))
        cursor.execute("INSERT INTO group_members (group_name, user_name) VALUES ('big', 'alice'), ('big', 'bob')")
        with cursor.copy("COPY conversations (id, kind, last_seq, created_at, updated_at) FROM STDIN") as copy:
            copy.write_row(("group:big", "group", messages, now, now))
            for peer in peers:
                copy.write_row((f"dm:alice:{peer}", "dm", PER_DM, now, now))
        with cursor.copy("COPY dm_members (conversation_id, user_name) FROM STDIN") as copy:
            for peer in peers:
                copy.write_row((f"dm:alice:{peer}", "alice"))
                copy.write_row((f"dm:alice:{peer}", peer))
        columns = "conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at, stream_pos"
        with cursor.copy(f"COPY messages ({columns}) FROM STDIN") as copy:
            position = 0
            for seq in range(1, messages + 1):
                position += 1
                stored = now - timedelta(seconds=head - position)
                copy.write_row(("group:big", seq, "bob", f"g{seq}", "hello", "group/big/bob", b"{}", stored, position))
            for seq in range(1, PER_DM + 1):
                for peer in peers:
                    position += 1
                    stored = now - timedelta(seconds=head - position)
                    topic = f"dm/alice/{peer}"
                    copy.write_row(
                        (f"dm:alice:{peer}", seq, peer, f"d{position}", "hi", topic, b"{}", stored, position)
                    )
        cursor.execute("UPDATE stream_positions SET position = %s WHERE name = 'messages'", (head,))
        settle(connection)
    return head


def parameters(after: int) -> dict[str, Any]:
    return {"user": "alice", "after": after, "limit": LIMIT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000, help="messages in the big group")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pages", type=int, default=20, help="sync pages of the first sync, per statement")
    args = parser.parse_args()
    database = BenchDatabase.create()
    engine = make_engine(database.url)
    try:
        upgrade(engine)
        head = load(database.dsn, args.messages)
        print(f"alice: a group of {args.messages:,} messages and {DMS} DMs of {PER_DM}; the stream's head {head:,}")
        reading = engine.execution_options(isolation_level="AUTOCOMMIT")
        cursors = {"from the start": 0, "from the middle": head // 2, "100 behind": head - 100}
        print(f"{'cursor':18} {'statement':24} {'median':>9} {'Postgres':>9}")
        with reading.connect() as connection:
            for label, after in cursors.items():
                for name, statement in STATEMENTS.items():
                    times = []
                    for _ in range(args.repeats + 1):
                        started = time.perf_counter()
                        connection.execute(statement, parameters(after)).all()
                        times.append(time.perf_counter() - started)
                    plan = explain(connection, statement, parameters(after), analyze=True)
                    executed = next(line for line in plan if line.startswith("Execution Time"))
                    postgres = float(executed.split()[2])
                    print(f"{label:18} {name:24} {statistics.median(times[1:]) * 1000:7.2f}ms {postgres:7.2f}ms")
        print(f"a first sync from the start: {args.pages} pages of {LIMIT - 1}, following the cursor")
        for name, statement in STATEMENTS.items():
            after, started = 0, time.perf_counter()
            with reading.connect() as connection:
                for _ in range(args.pages):
                    rows = connection.execute(statement, parameters(after)).all()
                    after = rows[LIMIT - 2].stream_pos
            elapsed = time.perf_counter() - started
            print(f"  {name:24} {elapsed / args.pages * 1000:7.2f} ms per page")
    finally:
        engine.dispose()
        database.drop()


if __name__ == "__main__":
    main()
