"""Notifications for a big offline group: how soon the first webhook call comes and how long the outbox takes
to drain after a burst, on SQLite and Postgres.

``switchboard up`` (broker, bridge and API in one process) with ``notify.webhook_url`` pointing at a local
HTTP server that answers 200 at once. One group of N members; only the sender is connected, so each of M
messages queues N - 1 notifications. The sender publishes the M messages at QoS 1 as fast as the broker
acknowledges them. Measured: the time to store the burst, the time from the burst stored to the first
webhook call and to the last notification (every member notified of all M messages), how long one more
message (a DM) takes to be stored while the notifier drains, and how long SIGINT takes to end the process.

    uv run python bench/notifier.py --database sqlite --members 500 --messages 600
    uv run python bench/notifier.py --database postgres

Needs, for Postgres, a cluster reachable as ``BENCH_PG_ADMIN_DSN`` (see bench/database.py). Run by hand;
results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.database import BenchDatabase  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402
from tests.burst import make_big_group, notified, publish, wait_stored  # noqa: E402
from tests.helpers import start_stack  # noqa: E402
from tests.webhook import Webhook  # noqa: E402


def run(database: str, members: int, messages: int, limit: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-notifier-"))
    pg = BenchDatabase.create() if database == "postgres" else None
    url = pg.url if pg is not None else f"sqlite:///{workdir}/bench.db"
    engine = make_engine(url)
    upgrade(engine)
    group = make_big_group(engine, members)
    webhook = Webhook()
    stack = start_stack(
        url,
        workdir,
        SWITCHBOARD_NOTIFY__WEBHOOK_URL=webhook.url,
        SWITCHBOARD_NOTIFY__SECRET=secrets.token_hex(8),
        SWITCHBOARD_NOTIFY__BATCH_SECONDS="2",
        SWITCHBOARD_BRIDGE__STOP_TIMEOUT_SECONDS="5",
    )
    try:
        began = time.monotonic()
        publisher = publish(stack.mqtt_port, group, f"group/{group.group}/{group.sender}", messages, "burst")
        acked = time.monotonic()
        stored_at = wait_stored(engine, group.conversation, messages, limit)
        print(f"{database}: {members} members, {messages} messages = {messages * (members - 1):,} notifications")
        print(f"  burst acknowledged in {acked - began:.1f}s, stored in {stored_at - began:.1f}s")
        deadline = stored_at + limit
        while not webhook.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        if not webhook.calls:
            print(f"  no webhook call within {limit:.0f}s of the burst being stored")
        else:
            first = webhook.calls[0].at
            print(
                f"  first webhook call {first - began:.1f}s after the burst began "
                f"({first - stored_at:+.1f}s from its being stored)"
            )
        probe_sent = time.monotonic()
        publisher.publish(f"dm/{group.outsider}/{group.sender}", [b'{"id":"probe","body":"still there?"}'])
        try:
            probe_stored = wait_stored(engine, group.probe_conversation, 1, limit)
            print(f"  a DM published meanwhile was stored in {probe_stored - probe_sent:.2f}s")
        except AssertionError:
            print(f"  a DM published meanwhile was not stored within {limit:.0f}s")
        publisher.close()
        while time.monotonic() < deadline:
            counts = notified(webhook)
            if all(counts.get(member) == messages for member in group.members):
                done = max(call.at for call in webhook.calls)
                print(
                    f"  every member notified {done - stored_at:.1f}s after the burst was stored "
                    f"({len(webhook.calls)} webhook calls)"
                )
                break
            time.sleep(0.2)
        else:
            counts = notified(webhook)
            print(f"  after {limit:.0f}s: {sum(counts.values()):,} of {messages * (members - 1):,} notified")
    finally:
        signalled = time.monotonic()
        stack.process.send_signal(signal.SIGINT)
        try:
            stack.process.wait(timeout=limit)
            print(f"  SIGINT ended the process in {time.monotonic() - signalled:.1f}s")
        except Exception:
            print(f"  SIGINT did not end the process within {limit:.0f}s; killed")
            stack.process.kill()
            stack.process.wait()
        stack.out.close()
        webhook.close()
        engine.dispose()
        if pg is not None:
            pg.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--limit", type=float, default=300.0, help="give up on each phase after this many seconds")
    args = parser.parse_args()
    run(args.database, args.members, args.messages, args.limit)


if __name__ == "__main__":
    main()
