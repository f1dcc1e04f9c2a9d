"""Switchboard on a three-node RabbitMQ cluster: messages per second through the cluster with the bridge
storing, and how long the bridge takes to recover when its node is killed; beside the same stream through
Switchboard's own broker in the same run.

1. A fresh Postgres database, ``switchboard api`` (RabbitMQ's HTTP auth backend), a three-node RabbitMQ 3.10
   cluster (tests/rabbitcluster.py: MQTT plugin, quorum queues) and ``switchboard bridge`` on node 1 with
   nodes 2 and 3 as fallbacks.
2. Steady stream: S senders, spread over the three nodes, publish M QoS 1 DMs (about 100 bytes) into C
   conversations as fast as the cluster acknowledges them (at most 500 unacknowledged each); timed until the
   bridge has stored the last one. CPU seconds of every process (the nodes, the bridge, the API and this
   generator) over the same interval.
3. Failover: senders on nodes 2 and 3 publish M more; node 1 (the bridge's, leader of its session's quorum
   queue) is killed a third of the way through; timed from the kill until the bridge is connected again and
   until the last message is stored.
4. The steady stream of step 2 through ``switchboard broker`` + ``switchboard bridge`` on the same database.

    uv run python bench/rabbitmq_cluster.py --messages 20000

Needs rabbitmq-server (Debian) and Postgres as ``BENCH_PG_ADMIN_DSN`` (see bench/database.py). Run by hand;
results go in docs/scaling.md.
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
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bridge import count_distinct, count_stored, cpu_seconds, publish, wait_for_line  # noqa: E402
from bench.brokers import free_port  # noqa: E402
from bench.database import BenchDatabase  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402
from tests.rabbitcluster import RabbitCluster  # noqa: E402

COMMAND = [sys.executable, "-m", "cli.main"]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic()


def cpu(pids: list[int]) -> float:
    return sum(sum(cpu_seconds(pid)) for pid in pids)


def steady(
    senders: list[tuple[str, str, int]], per_sender: int, conversations: int, dsn: str, pids: dict[str, list[int]]
) -> tuple[float, float, dict[str, float]]:
    """Publish and wait until stored: (acknowledged msg/s, stored msg/s, CPU seconds per process kind)."""
    before = {kind: cpu(p) for kind, p in pids.items()}
    mine = sum(os.times()[:2])
    already = count_stored(dsn)
    total = per_sender * len(senders)
    started = time.monotonic()
    publish_seconds = asyncio.run(publish(senders, per_sender, conversations, offset=already))
    done = wait_until(lambda: count_stored(dsn) >= already + total, 600, "the bridge to store the stream")
    used = {kind: cpu(p) - before[kind] for kind, p in pids.items()}
    used["generator"] = sum(os.times()[:2]) - mine
    used["wall"] = done - started
    return total / publish_seconds, total / (done - started), used


def report(title: str, acked: float, stored: float, used: dict[str, float], total: int) -> None:
    wall = used.pop("wall")
    print(f"{title}: acknowledged {acked:8.0f} msg/s, stored {stored:8.0f} msg/s")
    for kind, seconds in used.items():
        share, per_message = seconds / wall, seconds / total * 1e6
        print(f"    {kind:10s} {seconds:6.1f} CPU s = {share:4.0%} of a core, {per_message:6.0f} us/msg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--conversations", type=int, default=10, help="recipients per sender")
    args = parser.parse_args()
    per_sender = args.messages // args.senders
    database = BenchDatabase.create()
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-rabbit-bench-"))
    engine = make_engine(database.url)
    upgrade(engine)
    users = [(f"sender{i}", f"pw-{i}") for i in range(args.senders)]
    bridge_password = secrets.token_urlsafe(16)
    from sqlmodel import Session

    with Session(engine) as session:
        for user, password in users:
            accounts.create_user(session, user, password)
        for peer in range(args.conversations):
            accounts.create_user(session, f"peer{peer}", "unused-password")
        accounts.ensure_service_account(session, "switchboard-bridge", bridge_password)
        session.commit()
    engine.dispose()
    api_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "PYTHONPATH": str(REPO),
        "SWITCHBOARD_DATABASE_URL": database.url,
        "SWITCHBOARD_LOG__LEVEL": "INFO",
        "SWITCHBOARD_API__HOST": "127.0.0.1",
        "SWITCHBOARD_API__PORT": str(api_port),
        "SWITCHBOARD_API__METRICS_PORT": "null",
        "SWITCHBOARD_BRIDGE__METRICS_PORT": "null",
        "SWITCHBOARD_MQTT__METRICS_PORT": "null",
        "SWITCHBOARD_MQTT__WS_PORT": "0",
        "SWITCHBOARD_BRIDGE__PASSWORD": bridge_password,
    }

    def start(name: str, *extra: str, **settings: str) -> subprocess.Popen[bytes]:
        log = (workdir / f"{name}.log").open("wb")
        return subprocess.Popen([*COMMAND, *extra], env={**env, **settings}, cwd=workdir, stdout=log, stderr=log)

    api = start("api", "api")
    wait_for_line(workdir / "api.log", "api listening")
    cluster = RabbitCluster(workdir / "rabbitmq", f"http://127.0.0.1:{api_port}", "switchboard-bridge", bridge_password)
    processes = [api]
    try:
        started = time.monotonic()
        cluster.start()
        print(f"three-node cluster formed in {time.monotonic() - started:.0f} s (logs in {workdir})")
        first, *others = cluster.nodes
        bridge = start(
            "bridge",
            "bridge",
            SWITCHBOARD_BRIDGE__BROKER_PORT=str(first.mqtt_port),
            SWITCHBOARD_BRIDGE__BROKER_FALLBACKS=json.dumps([f"127.0.0.1:{n.mqtt_port}" for n in others]),
        )
        processes.append(bridge)
        wait_for_line(workdir / "bridge.log", "bridge: connected")
        pids = {"rabbitmq": cluster.vm_pids(), "bridge": [bridge.pid], "api": [api.pid]}
        spread = [(u, p, cluster.nodes[i % 3].mqtt_port) for i, (u, p) in enumerate(users)]
        acked, stored, used = steady(spread, per_sender, args.conversations, database.dsn, pids)
        report("RabbitMQ cluster, steady", acked, stored, used, per_sender * len(users))

        survivors = [(u, p, cluster.nodes[1 + i % 2].mqtt_port) for i, (u, p) in enumerate(users)]
        already, total = count_stored(database.dsn), per_sender * len(users)
        publishing = subprocess.Popen(  # the publishers run on while the node dies: a process of their own
            [
                sys.executable,
                __file__,
                "--publish-only",
                json.dumps([survivors, per_sender, args.conversations, already]),
            ]
        )
        wait_until(lambda: count_stored(database.dsn) >= already + total // 3, 300, "a third of the second stream")
        connections = (workdir / "bridge.log").read_text().count("bridge: connected")
        cluster.stop_node(first)
        killed = time.monotonic()
        reconnected = wait_until(
            lambda: (workdir / "bridge.log").read_text().count("bridge: connected") > connections, 300, "the bridge"
        )
        done = wait_until(lambda: count_stored(database.dsn) >= already + total, 600, "the rest of the stream")
        publishing.wait(timeout=600)
        print(
            f"node killed: bridge connected to another node after {reconnected - killed:.1f} s, "
            f"last message stored {done - killed:.1f} s after the kill; "
            f"{count_stored(database.dsn)} stored, {count_distinct(database.dsn)} distinct"
        )
        bridge.terminate()
        bridge.wait(timeout=30)
        cluster.close()

        port = free_port()
        own = {"SWITCHBOARD_MQTT__PORT": str(port), "SWITCHBOARD_MQTT__HOST": "127.0.0.1"}
        broker = start("broker", "broker", **own)
        processes.append(broker)
        wait_for_line(workdir / "broker.log", "mqtt listening")
        bridge = start("bridge-own", "bridge", **own, SWITCHBOARD_BRIDGE__BROKER_PORT=str(port))
        processes.append(bridge)
        wait_for_line(workdir / "bridge-own.log", "bridge: connected")
        pids = {"broker": [broker.pid], "bridge": [bridge.pid], "api": [api.pid]}
        alone = [(u, p, port) for u, p in users]
        acked2, stored2, used2 = steady(alone, per_sender, args.conversations, database.dsn, pids)
        report("Switchboard's broker, steady", acked2, stored2, used2, per_sender * len(users))
        print(f"stored msg/s, RabbitMQ cluster / Switchboard's broker = {stored / stored2:.2f}")
    finally:
        cluster.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        database.drop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--publish-only":
        senders, per_sender, conversations, offset = json.loads(sys.argv[2])
        asyncio.run(publish([tuple(s) for s in senders], per_sender, conversations, offset))
    else:
        main()
