"""The bridge stores every acknowledged message exactly once, in order, through crashes and outages.

Each test runs the broker and the bridge as separate processes (``switchboard broker``,
``switchboard bridge``) on Postgres, and checks the stored rows: each id once, seq 1, 2, 3 ... without
gaps, in the order the sender published.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.deploy import Deployment, Publisher, assert_exactly_once_in_order, json_payloads
from tests.pgcluster import PrivateCluster


def test_kill_9_of_the_bridge_mid_stream_loses_and_duplicates_nothing(postgres_deployment: Deployment) -> None:
    """Ack after commit: 10,000 QoS 1 messages, the bridge killed with SIGKILL part-way, then restarted."""
    d = postgres_deployment
    alice, alice_pw = d.user("alice")
    d.user("bob")
    d.start_broker()
    bridge = d.start_bridge()
    bridge.out.wait_for("bridge: connected", 60)
    publisher = Publisher(d.port, alice, alice_pw)
    infos = publisher.publish("dm/bob/alice", json_payloads("k", 10_000))
    d.wait_stored("dm:alice:bob", 1500)
    bridge.stop(signal.SIGKILL)
    stored_at_crash = len(d.stored("dm:alice:bob"))
    assert stored_at_crash < 10_000, "the crash should happen mid-stream"
    d.start_bridge().out.wait_for("bridge: connected", 60)
    Publisher.wait_acked(infos)
    rows = d.wait_stored("dm:alice:bob", 10_000, timeout=180)
    time.sleep(1)  # anything left to (wrongly) store twice would arrive now
    assert_exactly_once_in_order(d.stored("dm:alice:bob"), [f"k{n:05d}" for n in range(10_000)])
    assert len(rows) == 10_000
    publisher.close()


def test_broker_restart_mid_stream_the_bridge_resumes_its_session(postgres_deployment: Deployment) -> None:
    d = postgres_deployment
    alice, alice_pw = d.user("alice")
    d.user("bob")
    broker = d.start_broker()
    bridge = d.start_bridge()
    bridge.out.wait_for("bridge: connected", 60)
    publisher = Publisher(d.port, alice, alice_pw)
    first = publisher.publish("dm/bob/alice", json_payloads("a", 2000))
    Publisher.wait_acked(first)
    connects = publisher.connects
    assert broker.stop(signal.SIGTERM) == 0  # while the bridge is still draining its queue
    d.start_broker()
    publisher.wait_reconnected(after=connects)
    second = publisher.publish("dm/bob/alice", json_payloads("b", 1000))
    Publisher.wait_acked(second)
    d.wait_stored("dm:alice:bob", 3000)
    time.sleep(1)
    assert_exactly_once_in_order(
        d.stored("dm:alice:bob"), [f"a{n:05d}" for n in range(2000)] + [f"b{n:05d}" for n in range(1000)]
    )
    assert len([line for line in bridge.out.lines if "bridge: connected" in line]) >= 2
    publisher.close()


def test_database_outage_of_30_seconds_is_waited_out(tmp_path: Path) -> None:
    """Postgres stopped for 30 s mid-stream: the bridge holds its batch, says what it waits for, retries
    with capped backoff, takes nothing new meanwhile, and loses or duplicates nothing."""
    cluster = PrivateCluster()
    d = Deployment(cluster.url, tmp_path)
    try:
        alice, alice_pw = d.user("alice")
        d.user("bob")
        d.start_broker()
        bridge = d.start_bridge()
        bridge.out.wait_for("bridge: connected", 60)
        metrics_port = int(bridge.out.wait_for(r"bridge metrics on http://[\d.]+:(\d+)/metrics", 30).group(1))
        publisher = Publisher(d.port, alice, alice_pw)
        before = publisher.publish("dm/bob/alice", json_payloads("x", 1000))
        d.wait_stored("dm:alice:bob", 1000)
        Publisher.wait_acked(before)

        cluster.stop()
        during = publisher.publish("dm/bob/alice", json_payloads("y", 2000))
        Publisher.wait_acked(during)  # the broker still takes and acknowledges messages
        bridge.out.wait_for(r"bridge: waiting for the database .* retrying in", 30)
        time.sleep(25)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", trust_env=False).text
        assert "switchboard_bridge_waiting_for_database 1.0" in metrics
        lag = float(
            next(line.split()[1] for line in metrics.splitlines() if line.startswith("switchboard_bridge_lag "))
        )
        assert (
            0 < lag <= 4000
        )  # at most the bridge's in-flight window (mqtt.service_max_inflight): the broker queues the rest
        delays = [float(m) for m in _retry_delays(bridge.out.lines)]
        assert max(delays) <= 10.0 and delays == sorted(delays)  # capped backoff
        cluster.start()

        d.wait_stored("dm:alice:bob", 3000, timeout=120)
        time.sleep(1)
        assert_exactly_once_in_order(
            d.stored("dm:alice:bob"), [f"x{n:05d}" for n in range(1000)] + [f"y{n:05d}" for n in range(2000)]
        )
        publisher.close()
    finally:
        d.close()
        cluster.destroy()


def _retry_delays(lines: list[str]) -> list[str]:
    import re

    return [
        m.group(1) for line in lines if (m := re.search(r"waiting for the database .* retrying in ([\d.]+)s", line))
    ]
