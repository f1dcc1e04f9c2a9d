"""Bridge throughput: messages per second stored into Postgres, against a raw COPY of the same rows and
against the broker's own QoS 1 delivery rate, all in one run.

1. Broker (``switchboard broker``) and bridge (``switchboard bridge``) as separate processes on a fresh
   Postgres database. P publishers send M QoS 1 messages (about 100 bytes) into C conversations as fast
   as the broker acknowledges them; we time until the bridge has stored the last one.
2. The same M rows written by one ``COPY ... FROM STDIN`` into a copy of the messages table.
3. The broker alone delivering the same stream to one QoS 1 subscriber that acknowledges at once
   (the rate the bridge has to keep up with), twice: a clean-session subscriber (the figure reported
   until 2026-12-01) and a persistent-session one (clean session 0, as the bridge's: the broker then
   also keeps that session in its state file). The bridge is compared with both.

    uv run python bench/bridge.py --messages 50000
    uv run python bench/bridge.py --messages 50000 --bridges 2   # two bridges sharing $share/bench/...

Needs a Postgres reachable as ``BENCH_PG_ADMIN_DSN`` (default: the local cluster's socket, as the
current user, as scripts/test sets it up). Run by hand; results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.brokers import free_port  # noqa: E402
from bench.database import BenchDatabase  # noqa: E402
from bench.mqttwire import connect_packet, puback_packet, publish_packet, subscribe_packet  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402

DISCONNECT = b"\xe0\x00"


def payload(sender: str, n: int) -> bytes:
    return json.dumps({"id": f"{sender}-{n:07d}", "body": "x" * 60}).encode()


async def publish(senders: list[tuple[str, str, int]], per_sender: int, conversations: int, offset: int = 0) -> float:
    """Each (user, password, port) publishes its share (message ids from ``offset``) at QoS 1, keeping up to 500
    unacknowledged; returns seconds taken."""

    async def one(user: str, password: str, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet(f"bench-{user}-{offset}", user, password))
        connack = await reader.readexactly(4)
        if connack[3] != 0:
            raise SystemExit(f"{user} refused on port {port}: CONNACK {connack[3]}")
        window = asyncio.Semaphore(500)

        async def acks() -> None:
            for _ in range(per_sender):
                await reader.readexactly(4)
                window.release()

        ack_task = asyncio.create_task(acks())
        for n in range(offset, offset + per_sender):
            await window.acquire()
            packet_id = n % 65535 + 1
            writer.write(
                publish_packet(f"dm/peer{n % conversations}/{user}", payload(user, n), qos=1, packet_id=packet_id)
            )
            if n % 100 == 0:
                await writer.drain()
        await writer.drain()
        await ack_task
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one(*sender) for sender in senders))
    return time.monotonic() - started


async def publish_stream(port: int, senders: list[tuple[str, str]], per_sender: int, conversations: int) -> float:
    """Each sender publishes its share at QoS 1 to the broker at ``port`` (see :func:`publish`)."""
    return await publish([(user, password, port) for user, password in senders], per_sender, conversations)


def wait_for_line(log: Path, text: str, timeout: float = 120) -> None:
    """Wait until a service's log file shows ``text`` (it has started), however long start-up takes."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{log.name} does not show {text!r} after {timeout:.0f}s:\n{log.read_text()}")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def count_distinct(dsn: str) -> int:
    """Messages stored once each (a message stored twice by two bridges would count once here)."""
    with psycopg.connect(dsn) as connection:
        query = "SELECT count(DISTINCT (sender, client_msg_id)) FROM messages"
        return int(connection.execute(query).fetchone()[0])  # type: ignore[index]


def backend_pids(dsn: str, database: str) -> list[int]:
    """The Postgres server processes serving ``database`` (the bridge's connections), this one's left out."""
    with psycopg.connect(dsn) as connection:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        return [int(pid) for (pid,) in connection.execute(query, (database,)).fetchall()]


def total_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (those gone since count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            total += sum(cpu_seconds(pid))
        except FileNotFoundError:
            pass
    return total


def commit_figures(metrics_port: int) -> tuple[float, float, float]:
    """From the bridge's /metrics: batches committed, messages in them, seconds the commit thread spent."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        found[name] = float(value) if value and not line.startswith("#") else 0.0
    return (
        found.get("switchboard_bridge_batch_size_count", 0.0),
        found.get("switchboard_bridge_batch_size_sum", 0.0),
        found.get("switchboard_bridge_commit_seconds_sum", 0.0),
    )


def count_stored(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        return int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])  # type: ignore[index]


def raw_copy(dsn: str, senders: list[str], per_sender: int, conversations: int) -> float:
    rows = []
    now = datetime.now(UTC)
    for sender in senders:
        for n in range(per_sender):
            body = payload(sender, n)
            rows.append(
                (
                    f"dm:{sender}:peer{n % conversations}",
                    n + 1,
                    sender,
                    f"{sender}-{n:07d}",
                    "x" * 60,
                    f"dm/peer{n % conversations}/{sender}",
                    body,
                    now,
                )
            )
    with psycopg.connect(dsn) as connection:
        connection.execute("CREATE TEMP TABLE copy_target (LIKE messages INCLUDING DEFAULTS)")
        started = time.monotonic()
        with connection.cursor().copy(
            "COPY copy_target (conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return time.monotonic() - started


async def broker_delivery_rate(
    port: int,
    senders: list[tuple[str, str]],
    per_sender: int,
    subscriber: tuple[str, str],
    conversations: int,
    *,
    clean: bool = True,
) -> float:
    """The broker alone: a QoS 1 subscriber on dm/# (a service account) acknowledging at once, with a clean
    session or (``clean=False``) a persistent one like the bridge's, which is discarded afterwards so the
    broker does not queue the bridge run's messages for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    user, password = subscriber
    client_id = f"bench-sink-{secrets.token_hex(2)}"
    writer.write(connect_packet(client_id, user, password, clean=clean))
    await reader.readexactly(4)
    writer.write(subscribe_packet("dm/#", 1, packet_id=1))
    await reader.readexactly(5)
    expected = per_sender * len(senders)

    async def sink() -> None:
        received = 0
        while received < expected:
            first = await reader.readexactly(1)
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            if first[0] >> 4 == 3:
                received += 1
                topic_len = int.from_bytes(body[:2], "big")
                writer.write(puback_packet(int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")))

    started = time.monotonic()
    sink_task = asyncio.create_task(sink())
    await publish_stream(port, senders, per_sender, conversations)
    await sink_task
    rate = expected / (time.monotonic() - started)
    writer.write(DISCONNECT)
    await writer.drain()
    writer.close()
    if not clean:  # a clean session on the same client id discards the persistent one [MQTT-3.1.2-6]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet(client_id, user, password, clean=True))
        await reader.readexactly(4)
        writer.write(DISCONNECT)
        await writer.drain()
        writer.close()
    return rate


async def discard_sessions(port: int, client_ids: list[str], password: str) -> None:
    """Connect as each bridge with a clean session and leave: the broker discards its persistent session."""
    for client_id in client_ids:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet(client_id, "switchboard-bridge", password, clean=True))
        await reader.readexactly(4)
        writer.write(DISCONNECT)
        await writer.drain()
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=50, help="recipients per sender")
    parser.add_argument(
        "--bridges", type=int, default=1, help="bridge processes; more than one share $share/bench/... (issue 14)"
    )
    args = parser.parse_args()
    per_sender = args.messages // args.senders
    database = BenchDatabase.create()
    url, dsn = database.url, database.dsn
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    bridge_password = secrets.token_urlsafe(16)
    engine = make_engine(url)
    upgrade(engine)
    senders = [(f"sender{i}", f"pw-{i}") for i in range(args.senders)]
    sink = ("bench-sink", "pw-sink")
    from sqlmodel import Session

    from switchboard.tables import Role

    with Session(engine) as session:
        for user, password in senders:
            accounts.create_user(session, user, password)
        for peer in range(args.conversations):
            accounts.create_user(session, f"peer{peer}", "unused-password")
        accounts.create_user(session, *sink, role=Role.SERVICE)
        session.commit()
    engine.dispose()

    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SWITCHBOARD_DATABASE_URL": url,
        "SWITCHBOARD_LOG__LEVEL": "WARNING",
        "SWITCHBOARD_MQTT__HOST": "127.0.0.1",
        "SWITCHBOARD_MQTT__PORT": str(port),
        "SWITCHBOARD_MQTT__WS_PORT": "0",
        "SWITCHBOARD_BRIDGE__BROKER_PORT": str(port),
        "SWITCHBOARD_BRIDGE__PASSWORD": bridge_password,
        # A few senders publish as fast as the broker acknowledges: the rate limit's code runs, it never refuses.
        "SWITCHBOARD_MQTT__PUBLISH_RATE": "1000000",
        "SWITCHBOARD_MQTT__PUBLISH_BURST": "1000000",
    }
    command = [sys.executable, "-m", "cli.main"]
    broker = subprocess.Popen(
        [*command, "broker"],
        env=env,
        cwd=workdir,
        stdout=(workdir / "broker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for_line(workdir / "broker.log", "mqtt listening")
    try:
        alone_before = (sum(cpu_seconds(broker.pid)), time.process_time())
        delivery = asyncio.run(broker_delivery_rate(port, senders, per_sender, sink, args.conversations))
        alone_broker_cpu = sum(cpu_seconds(broker.pid)) - alone_before[0]
        alone_bench_cpu = time.process_time() - alone_before[1]
        persistent = asyncio.run(broker_delivery_rate(port, senders, per_sender, sink, args.conversations, clean=False))
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("TRUNCATE messages, message_keys, conversations, rejected_messages CASCADE")
        shared = {"SWITCHBOARD_BRIDGE__SHARED_GROUP": "bench"} if args.bridges > 1 else {}
        bridges = [
            subprocess.Popen(
                [*command, "bridge"],
                env={
                    **env,
                    **shared,
                    "SWITCHBOARD_LOG__LEVEL": "INFO",
                    "SWITCHBOARD_BRIDGE__CLIENT_ID": f"bridge-{k}",
                    "SWITCHBOARD_BRIDGE__METRICS_PORT": str(metrics_port if k == 0 else 0),
                },
                cwd=workdir,
                stdout=(workdir / f"bridge-{k}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for k in range(args.bridges)
        ]
        for k in range(args.bridges):
            wait_for_line(workdir / f"bridge-{k}.log", "bridge: connected")
        bridge = bridges[0]
        if os.environ.get("BENCH_PROFILE_BRIDGE"):
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--threads",  # idle threads (waiting for a socket, a lock or the GIL) are left out
                    "-d",
                    "8",
                    "-f",
                    "raw",
                    "-o",
                    os.environ["BENCH_PROFILE_BRIDGE"],
                    "-p",
                    str(bridge.pid),
                ]
            )
        bridge_cpu = [cpu_seconds(b.pid) for b in bridges]
        backends = backend_pids(dsn, database.name)
        postgres_before, broker_before = total_cpu(backends), sum(cpu_seconds(broker.pid))
        commits_before = commit_figures(metrics_port)
        bench_before = time.process_time()
        started = time.monotonic()
        publish_seconds = asyncio.run(publish_stream(port, senders, per_sender, args.conversations))
        total = per_sender * args.senders
        while count_stored(dsn) < total and time.monotonic() - started < 300:
            time.sleep(0.05)
        stored_seconds = time.monotonic() - started
        each_cpu = [sum(cpu_seconds(b.pid)) - sum(before) for b, before in zip(bridges, bridge_cpu, strict=True)]
        cpu_user = sum(cpu_seconds(b.pid)[0] - before[0] for b, before in zip(bridges, bridge_cpu, strict=True))
        cpu_system = sum(cpu_seconds(b.pid)[1] - before[1] for b, before in zip(bridges, bridge_cpu, strict=True))
        bench_cpu = time.process_time() - bench_before
        postgres_cpu = total_cpu(backends) - postgres_before
        broker_cpu = sum(cpu_seconds(broker.pid)) - broker_before
        batches, batched, commit_seconds = (
            after - before for after, before in zip(commit_figures(metrics_port), commits_before, strict=True)
        )
        stored, distinct = count_stored(dsn), count_distinct(dsn)
        for b in bridges:
            b.terminate()
        for b in bridges:  # gone before the database is dropped
            b.wait(timeout=30)
        # The broker alone once more, after the bridges' sessions are discarded (the broker would go on queueing
        # for them): the machine's load drifts, so the bridge is compared with the mean of before and after.
        asyncio.run(discard_sessions(port, [f"bridge-{k}" for k in range(args.bridges)], bridge_password))
        after_before = sum(cpu_seconds(broker.pid))
        delivery_after = asyncio.run(broker_delivery_rate(port, senders, per_sender, sink, args.conversations))
        after_broker_cpu = sum(cpu_seconds(broker.pid)) - after_before
        copy_seconds = raw_copy(dsn, [u for u, _ in senders], per_sender, args.conversations)
    finally:
        broker.terminate()
        broker.wait()
    database.drop()
    bridge_rate = stored / stored_seconds
    copy_rate = total / copy_seconds
    print(f"logs in {workdir}")
    print(f"messages: {total} from {args.senders} senders into {args.senders * args.conversations} conversations")
    print(f"broker QoS 1 delivery to one subscriber: {delivery:9.0f} msg/s (clean session)")
    print(f"  ... to a persistent-session subscriber: {persistent:9.0f} msg/s (clean session 0, as the bridge)")
    print(f"publishers acknowledged by the broker:    {total / publish_seconds:9.0f} msg/s")
    print(f"bridge(s) stored into Postgres:           {bridge_rate:9.0f} msg/s ({stored} stored, {distinct} distinct)")
    if len(each_cpu) > 1:
        print("CPU seconds of each bridge (all take part): " + ", ".join(f"{c:.1f}" for c in each_cpu))
    per_1000 = (cpu_user + cpu_system) / max(stored, 1) * 1000
    split = f"user {cpu_user:.1f} s + system {cpu_system:.1f} s"
    print(f"bridge CPU per 1,000 stored:              {per_1000:9.3f} s ({split})")
    per = 1e6 / max(stored, 1)
    print(
        f"CPU per message, broker alone (clean session): broker {alone_broker_cpu / total * 1e6:.1f} µs, "
        f"publishers and subscriber {alone_bench_cpu / total * 1e6:.1f} µs"
    )
    print(
        f"CPU per stored message, with the bridge: broker {broker_cpu * per:.1f} µs, publishers {bench_cpu * per:.1f}"
        f" µs, bridge {(cpu_user + cpu_system) * per:.1f} µs, its Postgres backends {postgres_cpu * per:.1f} µs"
    )
    if batches:
        print(
            f"batches: {batches:.0f} of {batched / batches:.0f} messages on average; bridge 0's commit thread busy "
            f"{commit_seconds:.1f} s of {stored_seconds:.1f} s, {commit_seconds / batches * 1000:.0f} ms per batch "
            f"({commit_seconds / max(batched, 1) * 1e6:.0f} µs per message)"
        )
    print(f"raw COPY of the same rows:                {copy_rate:9.0f} rows/s")
    print(
        f"broker QoS 1 delivery again, after:       {delivery_after:9.0f} msg/s (clean session, bridges gone; "
        f"broker CPU {after_broker_cpu / total * 1e6:.1f} µs per message)"
    )
    print(f"bridge / COPY = {bridge_rate / copy_rate:.2f};  bridge / broker delivery = {bridge_rate / delivery:.2f}")
    mean_delivery = (delivery + delivery_after) / 2
    print(f"bridge / mean of the broker's delivery before and after = {bridge_rate / mean_delivery:.2f}")
    print(f"bridge / broker delivery to a persistent session (same session kind) = {bridge_rate / persistent:.2f}")


if __name__ == "__main__":
    main()
