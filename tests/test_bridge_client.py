"""The bridge's own MQTT client (bridge.mqtt_client) against two real brokers, Switchboard's and Mosquitto,
and the bridge over the broker's TLS listener.

The client hands over every PUBLISH of a read as one list and acknowledges only what it is told to (the
bridge's ack-after-commit); what it did not acknowledge comes again on its next connection, because the
session is persistent [MQTT-4.4.0-1]. Idle, it keeps the connection with PINGREQ [MQTT-3.1.2-23].
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt_client import BrokerConnection, BrokerUnavailable, Message
from tests.conftest import create_database, drop_database
from tests.deploy import Deployment
from tests.helpers import Stack, free_port, mosquitto_pub, self_signed_cert


@pytest.fixture(params=["switchboard", "mosquitto"])
def broker_port(request: pytest.FixtureRequest) -> int:
    """An anonymous broker: Switchboard's (the open stack) or Mosquitto."""
    if request.param == "switchboard":
        stack: Stack = request.getfixturevalue("open_stack")
        return stack.mqtt_port
    port: int = request.getfixturevalue("mosquitto")
    return port


class Inbox:
    """What a connection received: the lists as handed over, and a wake-up for each."""

    def __init__(self) -> None:
        self.reads: list[list[Message]] = []
        self.arrived = asyncio.Event()

    def take(self, messages: list[Message]) -> None:
        self.reads.append(messages)
        self.arrived.set()

    @property
    def messages(self) -> list[Message]:
        return [message for read in self.reads for message in read]

    async def wait_for(self, count: int) -> list[Message]:
        async with asyncio.timeout(20):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


def connection(port: int, client_id: str, inbox: Inbox, *, keepalive: int = 30) -> BrokerConnection:
    return BrokerConnection(
        host="127.0.0.1",
        port=port,
        username="",
        password="",
        client_id=client_id,
        on_messages=inbox.take,
        keepalive=keepalive,
    )


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


def test_only_what_the_bridge_acknowledged_stays_away_on_its_next_connection(broker_port: int) -> None:
    """[MQTT-4.4.0-1] with clean session 0: the PUBACK is the bridge's commit; what it held back comes again."""
    topic, client_id = f"client-test/{secrets.token_hex(3)}", f"bridge-client-{secrets.token_hex(3)}"

    async def scenario() -> None:
        first = Inbox()
        bridge = connection(broker_port, client_id, first)
        await bridge.connect()
        await bridge.subscribe([(f"{topic}/#", 1)])
        publisher = connection(broker_port, f"{client_id}-pub", Inbox())
        await publisher.connect()
        for n in range(5):
            publisher.publish(f"{topic}/x", f"m{n}".encode(), qos=1)
        received = await first.wait_for(2)
        assert all(isinstance(read, list) and read for read in first.reads)
        assert [(m.topic, m.qos, m.retained) for m in received[:2]] == [(f"{topic}/x", 1, False)] * 2
        bridge.ack(received[:2])  # "committed": these two only
        await bridge.disconnect()  # the PUBACKs leave before the DISCONNECT

        second = Inbox()
        again = connection(broker_port, client_id, second)
        await again.connect()  # no SUBSCRIBE: the session has it
        while len(second.messages) < 3:
            again.ack(await second.wait_for(len(second.messages) + 1))  # each read acknowledged: the window moves
        await asyncio.sleep(0.5)
        assert [m.payload for m in second.messages] == [b"m2", b"m3", b"m4"]
        await again.disconnect()
        await publisher.disconnect()

    run(scenario())


def test_the_ack_replies_of_a_batch_go_out_as_qos1_publishes_in_order(broker_port: int) -> None:
    """publish_replies: one buffer of QoS 1 PUBLISH packets [MQTT-3.3.1], topic names encoded once per topic
    and reused, short (remaining length < 128) and long ones; each arrives once, in order, at QoS 1."""
    client_id = f"bridge-replies-{secrets.token_hex(3)}"

    async def scenario() -> None:
        inbox = Inbox()
        reader = connection(broker_port, client_id, inbox)
        await reader.connect()
        await reader.subscribe([(f"{client_id}/#", 1)])
        replier = connection(broker_port, f"{client_id}-pub", Inbox())
        await replier.connect()
        # 8 at most: the open stack queues 3 in flight + 5 for a subscriber (OPEN_LIMITS)
        replies = [(f"{client_id}/x{n % 3}", (f"r{n}:" + "x" * (n * 40)).encode()) for n in range(8)]
        replier.publish_replies(replies[:4])
        replier.publish_replies(replies[4:])  # the same topics again: their cached encodings
        acknowledged = 0
        while acknowledged < 8:  # each new read acknowledged once: the broker's in-flight window moves
            fresh = (await inbox.wait_for(acknowledged + 1))[acknowledged:]
            reader.ack(fresh)
            acknowledged += len(fresh)
        received = inbox.messages
        assert [(m.topic, m.payload, m.qos) for m in received] == [(t, p, 1) for t, p in replies]
        await reader.disconnect()
        await replier.disconnect()

    run(scenario())


def test_an_idle_connection_is_kept_with_pingreq(broker_port: int) -> None:
    """[MQTT-3.1.2-23]: with keep-alive 2 s a broker closes a client silent for 3 s; the client pings."""

    async def scenario() -> None:
        inbox = Inbox()
        client_id = f"bridge-idle-{secrets.token_hex(3)}"
        idle = connection(broker_port, client_id, inbox, keepalive=2)
        await idle.connect()
        await idle.subscribe([(f"{client_id}/#", 1)])
        await asyncio.sleep(7)
        assert not idle.closed.done()
        publisher = connection(broker_port, f"{client_id}-pub", Inbox())
        await publisher.connect()
        publisher.publish(f"{client_id}/x", b"still here", qos=1)
        assert [m.payload for m in await inbox.wait_for(1)] == [b"still here"]
        await idle.disconnect()
        await publisher.disconnect()

    run(scenario())


def test_nothing_listening_is_broker_unavailable() -> None:
    async def scenario() -> None:
        with pytest.raises(BrokerUnavailable, match=r"cannot connect to 127\.0\.0\.1:\d+"):
            await connection(free_port(), "nobody", Inbox()).connect()

    run(scenario())


@pytest.fixture
def tls_deployment(tmp_path: Path) -> Iterator[tuple[Deployment, Path]]:
    cert, key = self_signed_cert(tmp_path)
    name = f"switchboard_tls_{secrets.token_hex(4)}"
    tls_port = free_port()
    deployment = Deployment(
        create_database(name),
        tmp_path,
        SWITCHBOARD_MQTT__TLS_PORT=str(tls_port),
        SWITCHBOARD_MQTT__TLS_CERT=str(cert),
        SWITCHBOARD_MQTT__TLS_KEY=str(key),
    )
    deployment.env.update(SWITCHBOARD_BRIDGE__BROKER_PORT=str(tls_port), SWITCHBOARD_BRIDGE__BROKER_TLS="true")
    yield deployment, cert
    deployment.close()
    drop_database(name)


def test_the_bridge_stores_through_the_brokers_tls_listener(tls_deployment: tuple[Deployment, Path]) -> None:
    """bridge.broker_tls with bridge.broker_ca_file: the broker's certificate is verified against that CA;
    without the CA (the system's trusted CAs) the self-signed certificate is refused and nothing is stored."""
    d, cert = tls_deployment
    alice, alice_pw = d.user("alice")
    d.user("bob")
    d.start_broker()
    untrusting = d.start_bridge(SWITCHBOARD_BRIDGE__CLIENT_ID="bridge-untrusting")
    untrusting.out.wait_for(r"waiting for the broker at .*certificate verify failed", 60)
    untrusting.stop()
    bridge = d.start_bridge(SWITCHBOARD_BRIDGE__BROKER_CA_FILE=str(cert))
    bridge.out.wait_for("bridge: connected", 60)
    mosquitto_pub(d.port, alice, alice_pw, "dm/bob/alice", json.dumps({"id": "over-tls", "body": "hi"}))
    assert d.wait_stored("dm:alice:bob", 1) == [(1, "over-tls")]
