"""Switchboard past one machine, for real: a three-node RabbitMQ cluster (Debian's rabbitmq-server with its MQTT
plugin, ``mqtt.durable_queue_type = quorum``) in place of Switchboard's broker, asking the API who may log in,
publish and subscribe (api/routes/rabbitmq.py), with the bridge and the API unchanged.

Clients on different nodes exchange DMs and group messages; the bridge stores each once with gapless seq. Then
the node the bridge is connected to (the leader of its session's quorum queue) is killed mid-stream: the bridge
moves to another node (``bridge.broker_fallbacks``), its persistent session survives on the quorum queue, and
every message the publishers had acknowledged is stored once, in order.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import paho.mqtt.client as mqtt
import pytest
from sqlmodel import Session

from switchboard import accounts
from tests import rabbitcluster
from tests.conftest import create_database, drop_database
from tests.deploy import Deployment, Publisher, assert_exactly_once_in_order, json_payloads
from tests.helpers import Service, mosquitto_pub, run_mosquitto_pub, start_service, wait_for
from tests.rabbitcluster import RabbitCluster

pytestmark = pytest.mark.skipif(
    not rabbitcluster.installed(), reason="rabbitmq-server is not installed (scripts/test installs it from Debian)"
)


PRESENCE_TTL = 6  # presence.online_ttl_seconds: an "online" not renewed within it is offline


@dataclass
class Site:
    deployment: Deployment
    cluster: RabbitCluster
    api: Service
    api_url: str
    bridge: Service
    users: dict[str, str]

    def port(self, node: int) -> int:
        return self.cluster.nodes[node].mqtt_port

    def presence(self, user: str) -> str:
        """``user``'s status as the API serves it (asked by alice, who shares the group "watch" with them)."""
        answer = httpx.get(
            f"{self.api_url}/v1/presence", params={"user": user}, auth=("alice", self.users["alice"]), timeout=10
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["presence"][0]["status"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    name = f"switchboard_rabbit_{secrets.token_hex(4)}"
    workdir = tmp_path_factory.mktemp("rabbit")
    deployment = Deployment(create_database(name), workdir, SWITCHBOARD_PRESENCE__ONLINE_TTL_SECONDS=str(PRESENCE_TTL))
    users = dict(deployment.user(n) for n in ("alice", "bob", "carol", "dave", "e.ve"))
    with Session(deployment.engine) as session:
        accounts.create_group(session, "team", ["alice", "bob", "carol"])
        accounts.create_group(session, "watch", ["alice", "bob", "dave"])  # so alice may see their presence
        session.commit()
    bridge_password = deployment.env["SWITCHBOARD_BRIDGE__PASSWORD"]
    api = start_service("api", env=deployment.env, cwd=workdir)
    cluster: RabbitCluster | None = None
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        cluster = RabbitCluster(workdir / "rabbitmq", f"http://127.0.0.1:{port}", "switchboard-bridge", bridge_password)
        with Session(deployment.engine) as session:  # RabbitMQ's nodes ask the API as the bridge's account
            accounts.ensure_service_account(session, "switchboard-bridge", bridge_password)
            session.commit()
        cluster.start()
        first, *others = cluster.nodes  # the bridge on the first node, the two others as fallbacks
        bridge = deployment.start_bridge(
            SWITCHBOARD_BRIDGE__BROKER_PORT=str(first.mqtt_port),
            SWITCHBOARD_BRIDGE__BROKER_FALLBACKS=json.dumps([f"127.0.0.1:{n.mqtt_port}" for n in others]),
        )
        bridge.out.wait_for(rf"bridge: connected to 127\.0\.0\.1:{first.mqtt_port}", 120)
        yield Site(deployment, cluster, api, f"http://127.0.0.1:{port}", bridge, users)
    finally:
        if cluster is not None:
            cluster.close()
        api.stop(signal.SIGINT)
        deployment.close()
        drop_database(name)


def _subscriber(port: int, user: str, password: str, topic: str) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    received: list[tuple[str, bytes]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{secrets.token_hex(3)}")
    client.username_pw_set(user, password)
    client.on_message = lambda _c, _u, message: received.append((message.topic, bytes(message.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_for(client.is_connected, timeout=60, what=f"{user} to connect")
    result, _ = client.subscribe(topic, qos=1)
    assert result == mqtt.MQTT_ERR_SUCCESS
    return client, received


def test_clients_on_different_nodes_chat_and_the_bridge_stores_each_message_once(site: Site) -> None:
    u = site.users
    bob, to_bob = _subscriber(site.port(1), "bob", u["bob"], "dm/bob/+")
    carol, to_team = _subscriber(site.port(2), "carol", u["carol"], "group/team/+")
    alice, acks = _subscriber(site.port(0), "alice", u["alice"], "ack/alice")
    try:
        time.sleep(1)  # the SUBSCRIBEs above are asynchronous: let RabbitMQ bind the queues
        for n in range(3):
            mosquitto_pub(
                site.port(0), "alice", u["alice"], "dm/bob/alice", json.dumps({"id": f"dm-{n}", "body": "hi"})
            )
        mosquitto_pub(site.port(1), "bob", u["bob"], "group/team/bob", json.dumps({"id": "g-0", "body": "hello team"}))
        wait_for(lambda: len(to_bob) == 3 and len(to_team) == 1, timeout=30, what="live delivery across nodes")
        assert [json.loads(p)["id"] for _, p in to_bob] == ["dm-0", "dm-1", "dm-2"]
        assert site.deployment.wait_stored("dm:alice:bob", 3) == [(1, "dm-0"), (2, "dm-1"), (3, "dm-2")]
        assert site.deployment.wait_stored("group:team", 1) == [(1, "g-0")]
        # The bridge's acknowledgements reach alice through the cluster as through Switchboard's broker.
        wait_for(lambda: len(acks) == 3, timeout=30, what="the bridge's acks on ack/alice")
        assert sorted(json.loads(p)["seq"] for _, p in acks) == [1, 2, 3]
    finally:
        for client in (bob, carol, alice):
            client.disconnect()
            client.loop_stop()

    # The API decides for every node: a forged sender and a stranger's inbox are refused (RabbitMQ closes the
    # connection rather than answering 0x80), a wrong password too, and nothing of it is stored.
    forged = run_mosquitto_pub(site.port(2), "dave", u["dave"], "dm/bob/alice", '{"id": "forged", "body": "x"}')
    assert forged.returncode != 0
    refused = run_mosquitto_pub(site.port(1), "dave", "wrong", "dm/bob/dave", '{"id": "w", "body": "x"}')
    assert refused.returncode != 0 and b"bad user name or password" in refused.stderr
    # A "." in a user name would be a level separator in RabbitMQ's routing keys (dm/bob/e.ve arrives as
    # dm.bob.e.ve, which the plugin logs): such a user cannot log in through RabbitMQ.
    dotted = run_mosquitto_pub(site.port(2), "e.ve", u["e.ve"], "dm/bob/e.ve", '{"id": "dot", "body": "x"}')
    assert dotted.returncode != 0 and b"bad user name or password" in dotted.stderr
    outsider = run_mosquitto_pub(site.port(0), "dave", u["dave"], "group/team/dave", '{"id": "o", "body": "x"}')
    assert outsider.returncode != 0
    time.sleep(1)
    assert site.deployment.stored("dm:alice:bob") == [(1, "dm-0"), (2, "dm-1"), (3, "dm-2")]
    assert site.deployment.stored("group:team") == [(1, "g-0")]


def _online_with_heartbeat(port: int, user: str, password: str) -> tuple[mqtt.Client, threading.Event]:
    """A client announcing itself online, with its will (offline) set, renewing its presence every second until
    the returned event is set (as a phone does on a broker whose wills cannot be trusted)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-presence-{secrets.token_hex(3)}")
    client.username_pw_set(user, password)
    client.will_set(f"presence/{user}", json.dumps({"status": "offline"}), qos=1)
    client.reconnect_delay_set(1, 2)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            client.publish(f"presence/{user}", json.dumps({"status": "online"}), qos=1)

    client.publish(f"presence/{user}", json.dumps({"status": "online"}), qos=1)
    threading.Thread(target=beat, daemon=True).start()
    return client, stop


def test_a_node_killed_mid_stream_loses_no_acknowledged_message(site: Site) -> None:
    """Kill the bridge's node while two publishers on the other nodes stream QoS 1 DMs: the bridge resumes its
    persistent session on another node, and every acknowledged message is stored exactly once, in order.

    The dead node takes the wills of its clients with it: dave, connected there, never gets his will published,
    yet the API shows him offline once his online presence is older than presence.online_ttl_seconds, while
    bob, on a live node and renewing his presence, stays online."""
    u, count = site.users, 400
    dave, dave_beats = _online_with_heartbeat(site.port(0), "dave", u["dave"])
    bob, bob_beats = _online_with_heartbeat(site.port(1), "bob", u["bob"])
    wait_for(
        lambda: site.presence("dave") == "online" and site.presence("bob") == "online",
        timeout=60,
        what="dave's and bob's presence stored by the bridge",
    )
    publishers = {
        "alice": Publisher(site.port(1), "alice", u["alice"]),
        "carol": Publisher(site.port(2), "carol", u["carol"]),
    }
    infos: dict[str, list[mqtt.MQTTMessageInfo]] = {name: [] for name in publishers}
    payloads = {name: json_payloads(f"{name}-kill-", count) for name in publishers}
    try:
        for name, publisher in publishers.items():
            infos[name] += publisher.publish(f"dm/dave/{name}", payloads[name][: count // 2])
        dave_beats.set()  # dave's phone stops with the node, as it would lose its network
        site.cluster.stop_node(site.cluster.nodes[0])
        killed_at = time.monotonic()
        for name, publisher in publishers.items():
            infos[name] += publisher.publish(f"dm/dave/{name}", payloads[name][count // 2 :])
        for name in publishers:
            Publisher.wait_acked(infos[name], timeout=180)
        site.bridge.out.wait_for(rf"bridge: connected to 127\.0\.0\.1:(?!{site.port(0)}\b)", 120)
        for name in publishers:
            conversation = f"dm:{min(name, 'dave')}:{max(name, 'dave')}"
            rows = site.deployment.wait_stored(conversation, count, timeout=180)
            recovered = time.monotonic() - killed_at
            time.sleep(1)  # nothing more arrives: each message once
            assert_exactly_once_in_order(
                site.deployment.stored(conversation), [f"{name}-kill-{n:05d}" for n in range(count)]
            )
            assert len(rows) == count
        print(f"rabbitmq cluster: {2 * count} messages stored {recovered:.1f}s after a node was killed")
        # No will came for dave (his node is dead), but his presence went stale: offline; bob renews his.
        wait_for(lambda: site.presence("dave") == "offline", timeout=60, what="dave's stale online to expire")
        time.sleep(PRESENCE_TTL + 1)
        assert site.presence("bob") == "online"
    finally:
        for publisher in publishers.values():
            publisher.close()
        for beats, client in ((dave_beats, dave), (bob_beats, bob)):
            beats.set()
            client.loop_stop()
