"""Bad input never harms the broker or another client: the offender is disconnected with a log line.

Runs against ``open_stack``: max_packet_bytes 2048, max_subscriptions 20, max_connections 60.
"""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Stack, wait_for
from tests.rawmqtt import CONNACK, PINGREQ, PINGRESP, PUBLISH, RawClient, connect_packet, packet

Raw = Callable[[int], RawClient]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _connected(stack: Stack, raw: Raw) -> RawClient | None:
    client = raw(stack.mqtt_port)
    try:
        return client if client.connect(_id("ok")).body == b"\x00\x00" else None
    except (AssertionError, OSError):
        return None  # still busy closing the previous test's connections (mqtt.max_connections)


def _broker_still_serves(stack: Stack, raw: Raw) -> None:
    """A fresh pair of clients can still publish and receive (once the broker caught up with the flood)."""
    topic = f"alive/{_id('t')}"
    listener = wait_for(lambda: _connected(stack, raw), timeout=15, what="a connection to be accepted")
    assert listener.subscribe((topic, 0)) == [0]
    talker = raw(stack.mqtt_port)
    talker.connect(_id("ok"))
    talker.publish(topic, b"still here")
    assert listener.publishes(1)[0].payload == b"still here"


def test_garbage_instead_of_connect_is_dropped(open_stack: Stack, raw: Raw) -> None:
    bystander = raw(open_stack.mqtt_port)
    bystander.connect(_id("bystander"))
    bad = raw(open_stack.mqtt_port)
    bad.send(b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n")
    assert bad.closed_by_broker()
    bystander.send(packet(PINGREQ, 0, b""))
    assert bystander.expect(PINGRESP)
    _broker_still_serves(open_stack, raw)


def test_second_connect_is_a_protocol_violation(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-3.1.0-2]."""
    client = raw(open_stack.mqtt_port)
    client.connect(_id("twice"))
    client.send(connect_packet(_id("twice")))
    assert client.closed_by_broker()
    open_stack.out.wait_for(r"a second CONNECT on one connection \[MQTT-3.1.0-2\]", 10)


def test_oversized_packet_is_refused_before_it_is_read(open_stack: Stack, raw: Raw) -> None:
    client = raw(open_stack.mqtt_port)
    client.connect(_id("big"))
    client.publish("big/topic", b"x" * 5000)
    assert client.closed_by_broker()
    open_stack.out.wait_for(r"over the limit of 2048 \(mqtt.max_packet_bytes\)", 10)
    _broker_still_serves(open_stack, raw)


def test_truncated_packet_then_hang_up(open_stack: Stack, raw: Raw) -> None:
    client = raw(open_stack.mqtt_port)
    client.connect(_id("cut"))
    client.send(bytes([PUBLISH << 4, 100]) + b"\x00\x05ab")  # claims 100 bytes, sends 4
    client.drop()
    _broker_still_serves(open_stack, raw)


def test_invalid_utf8_topic_and_wildcard_topic_are_violations(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-1.5.3-1] malformed UTF-8, [MQTT-3.3.2-2] wildcards in a topic name."""
    utf8 = raw(open_stack.mqtt_port)
    utf8.connect(_id("utf8"))
    utf8.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a\xffb" + b"payload"))
    assert utf8.closed_by_broker()
    wildcard = raw(open_stack.mqtt_port)
    wildcard.connect(_id("wild"))
    wildcard.publish("a/+/b", b"x")
    assert wildcard.closed_by_broker()
    open_stack.out.wait_for(r"wild-.*disconnected: .*\[MQTT-3.3.2-2\]", 10)
    open_stack.out.wait_for(r"utf8-.*disconnected: .*ill-formed UTF-8 .*\[MQTT-1.5.3-1\]", 10)
    _broker_still_serves(open_stack, raw)


def test_too_many_subscriptions_are_refused_one_by_one(open_stack: Stack, raw: Raw) -> None:
    client = raw(open_stack.mqtt_port)
    client.connect(_id("greedy"))
    base = _id("many")
    codes = client.subscribe(*[(f"{base}/{n}", 0) for n in range(25)])
    assert codes == [0] * 20 + [0x80] * 5
    client.send(packet(PINGREQ, 0, b""))
    assert client.expect(PINGRESP)  # refused, not disconnected


def test_connection_flood_is_capped_and_the_broker_recovers(open_stack: Stack, raw: Raw) -> None:
    sockets = []
    accepted = 0
    try:
        for n in range(90):
            sock = socket.create_connection(("127.0.0.1", open_stack.mqtt_port), timeout=5)
            sockets.append(sock)
            sock.sendall(connect_packet(f"flood-{n}-{secrets.token_hex(2)}"))
        for sock in sockets:
            try:
                reply = sock.recv(4)
            except OSError:
                reply = b""
            if reply[:1] == bytes([CONNACK << 4]) and reply[3:4] == b"\x00":
                accepted += 1
    finally:
        for sock in sockets:
            sock.close()
    assert 0 < accepted <= 60
    open_stack.out.wait_for(r"connections is the limit \(mqtt.max_connections\)", 10)
    _broker_still_serves(open_stack, raw)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=1, max_size=300), after_connect=st.booleans())
def test_random_bytes_never_bring_the_broker_down(open_stack: Stack, noise: bytes, after_connect: bool) -> None:
    with socket.create_connection(("127.0.0.1", open_stack.mqtt_port), timeout=5) as sock:
        if after_connect:
            sock.sendall(connect_packet(_id("fuzz")))
        try:
            sock.sendall(noise)
        except OSError:
            pass


def test_broker_survived_the_fuzzing(open_stack: Stack, raw: Raw) -> None:
    _broker_still_serves(open_stack, raw)
