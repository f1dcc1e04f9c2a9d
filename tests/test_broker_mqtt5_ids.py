"""MQTT 5 on Switchboard's broker, part 3: subscription identifiers [MQTT 5.0 §3.8.2.1.2, §3.3.4] and topic
aliases from client to broker [MQTT 5.0 §3.3.2.3.4], with paho-mqtt 2.x and mosquitto_pub/sub ``-V mqttv5``,
compared with Mosquitto where both behave alike; raw bytes where a client library would refuse to send them."""

from __future__ import annotations

import secrets
import struct
import subprocess
from collections.abc import Callable

from paho.mqtt.packettypes import PacketTypes

from tests.helpers import _Lines
from tests.mqtt5 import (
    OVER_TCP_AND_WS,
    SWITCHBOARD_OVER_TCP_AND_WS,
    V5Client,
    new_topic,
    props,
    raw_connect,
)
from tests.rawmqtt import CONNACK, DISCONNECT, PUBLISH, SUBACK, SUBSCRIBE, RawClient, packet

Raw = Callable[[int], RawClient]
PROTOCOL_ERROR, TOPIC_ALIAS_INVALID = 0x82, 0x94


def _ids(client: V5Client) -> list[int]:
    got = client.message()
    return sorted(getattr(got.properties, "SubscriptionIdentifier", []))


# Subscription identifiers ------------------------------------------------------------------------------


@SWITCHBOARD_OVER_TCP_AND_WS
def test_connack_announces_subscription_identifiers_and_topic_alias_maximum_MQTT_3_2_2(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    _flags, _reason, connack = clients(v5_port).connect()
    assert connack.SubscriptionIdentifierAvailable == 1 and connack.TopicAliasMaximum == 16


@OVER_TCP_AND_WS
def test_publish_carries_the_subscription_identifier_MQTT_3_3_4_3(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """The identifier a SUBSCRIBE gave comes with every PUBLISH delivered through that subscription; a
    subscription made without one brings none."""
    topic = new_topic()
    with_id, without = clients(v5_port), clients(v5_port)
    with_id.connect()
    without.connect()
    assert with_id.subscribe((topic, 1), properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))[0] == 1
    without.subscribe((topic, 1))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"hello", 1)
    assert _ids(with_id) == [7]
    assert _ids(without) == []


@OVER_TCP_AND_WS
def test_overlapping_subscriptions_bring_every_identifier_MQTT_3_3_4_4_and_5(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """Two subscriptions of one client match: the identifiers of both arrive (in one PUBLISH on Switchboard,
    which sends one copy; Mosquitto may send a copy per subscription, each with its own)."""
    base = new_topic()
    client = clients(v5_port)
    client.connect()
    client.subscribe((f"{base}/#", 1), properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    client.subscribe((f"{base}/+", 1), properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=300))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(f"{base}/x", b"both", 1)
    seen = _ids(client)
    while seen != [1, 300]:
        more = client.messages.get(timeout=5)
        seen = sorted(seen + list(getattr(more.properties, "SubscriptionIdentifier", [])))
    assert seen == [1, 300]


@OVER_TCP_AND_WS
def test_resubscribing_without_an_identifier_drops_it_MQTT_3_8_4_3(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """A SUBSCRIBE for the same filter replaces the subscription whole: without an identifier, none is sent."""
    topic = new_topic()
    client = clients(v5_port)
    client.connect()
    client.subscribe((topic, 1), properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=5))
    client.subscribe((topic, 1))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"plain", 1)
    assert _ids(client) == []


@SWITCHBOARD_OVER_TCP_AND_WS
def test_subscription_identifier_0_gets_disconnect_0x82_MQTT_3_8_2_1(v5_port: int, raw: Raw) -> None:
    """paho refuses to send identifier 0, so raw bytes: DISCONNECT 0x82 "protocol error", then the close."""
    client = raw(v5_port)
    client.send(raw_connect(f"id0-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    body = struct.pack("!H", 1) + b"\x02\x0b\x00" + struct.pack("!H", 3) + b"a/b" + b"\x01"
    client.send(packet(SUBSCRIBE, 0b0010, body))
    assert client.expect(DISCONNECT).body[0] == PROTOCOL_ERROR
    assert client.read(10) is None


@SWITCHBOARD_OVER_TCP_AND_WS
def test_subscription_identifier_from_a_client_in_publish_is_a_protocol_error_MQTT_3_3_4_6(
    v5_port: int, raw: Raw
) -> None:
    client = raw(v5_port)
    client.send(raw_connect(f"idpub-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x02\x0b\x05" + b"x"))
    assert client.expect(DISCONNECT).body[0] == PROTOCOL_ERROR


def test_mosquitto_sub_with_a_subscription_identifier_gets_its_messages_MQTT_3_8_2_1_2(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """mosquitto_sub -D subscribe subscription-identifier 9 is subscribed (it was disconnected with 0xA1 when the
    broker had no identifiers) and receives what is published."""
    topic = new_topic()
    args = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(v5_port), "-t", topic, "-q", "1", "-d"]
    args += ["-V", "mqttv5", "-D", "subscribe", "subscription-identifier", "9", "-F", "%p"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = _Lines(process.stdout)
    try:
        lines.wait_for(r"received SUBACK", 20)
        publisher = clients(v5_port)
        publisher.connect()
        publisher.publish(topic, b"to-nine", 1)
        lines.wait_for(r"^to-nine$", 20)
    finally:
        process.terminate()
        process.wait(timeout=10)
        lines.close()


# Topic aliases, client to broker -----------------------------------------------------------------------


@OVER_TCP_AND_WS
def test_topic_alias_set_then_used_with_an_empty_topic_MQTT_3_3_2_12(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """paho: a PUBLISH with topic and alias 3 sets it; then an empty topic with alias 3 goes to that topic."""
    topic = new_topic()
    subscriber = clients(v5_port)
    subscriber.connect()
    subscriber.subscribe((topic, 1))
    publisher = clients(v5_port)
    publisher.connect()
    assert publisher.publish(topic, b"first", 1, props(PacketTypes.PUBLISH, TopicAlias=3))[0].value == 0
    assert publisher.publish("", b"second", 1, props(PacketTypes.PUBLISH, TopicAlias=3))[0].value == 0
    got = [subscriber.message(), subscriber.message()]
    assert [(m.topic, m.payload) for m in got] == [(topic, b"first"), (topic, b"second")]
    assert not hasattr(got[1].properties, "TopicAlias")  # paho gives no Topic Alias Maximum: no aliases to it


def test_mosquitto_pub_with_a_topic_alias_MQTT_3_3_2_12(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """mosquitto_pub -D publish topic-alias 2 --repeat 3: the first PUBLISH sets the alias, the others use it."""
    topic = new_topic()
    subscriber = clients(v5_port)
    subscriber.connect()
    subscriber.subscribe((topic, 1))
    pub = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(v5_port), "-t", topic, "-q", "1", "-V", "mqttv5"]
    subprocess.run([*pub, "-D", "publish", "topic-alias", "2", "-m", "m", "--repeat", "3"], check=True, timeout=30)
    assert [(m.topic, m.payload) for m in (subscriber.message() for _ in range(3))] == [(topic, b"m")] * 3


@SWITCHBOARD_OVER_TCP_AND_WS
def test_topic_alias_is_per_connection_MQTT_3_3_2_7(v5_port: int, raw: Raw) -> None:
    """An alias set on one connection means nothing on another: an empty topic with it is a protocol error
    (DISCONNECT 0x82)."""
    first, second = raw(v5_port), raw(v5_port)
    for client in (first, second):
        client.send(raw_connect(f"alias-{secrets.token_hex(3)}"))
        assert client.expect(CONNACK).body[1] == 0
    first.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x03\x23\x00\x01" + b"x"))
    second.send(packet(PUBLISH, 0, struct.pack("!H", 0) + b"\x03\x23\x00\x01" + b"x"))
    assert second.expect(DISCONNECT).body[0] == PROTOCOL_ERROR
    first.send(packet(PUBLISH, 0, struct.pack("!H", 0) + b"\x03\x23\x00\x01" + b"y"))  # still fine on its own
    first.send(packet(SUBSCRIBE, 0b0010, struct.pack("!H", 9) + b"\x00" + struct.pack("!H", 3) + b"a/c\x00"))
    assert first.expect(SUBACK).body[:2] == struct.pack("!H", 9)


@SWITCHBOARD_OVER_TCP_AND_WS
def test_topic_alias_0_gets_disconnect_0x94_MQTT_3_3_2_8(v5_port: int, raw: Raw) -> None:
    client = raw(v5_port)
    client.send(raw_connect(f"alias0-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x03\x23\x00\x00" + b"x"))
    assert client.expect(DISCONNECT).body[0] == TOPIC_ALIAS_INVALID


@SWITCHBOARD_OVER_TCP_AND_WS
def test_topic_alias_over_the_maximum_gets_disconnect_0x94_MQTT_3_3_2_9(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """paho sends alias 17 (it does not check the broker's Topic Alias Maximum of 16): DISCONNECT 0x94."""
    client = clients(v5_port)
    client.connect()
    client.client.reconnect_delay_set(60, 120)
    client.client.publish(new_topic(), b"x", 0, properties=props(PacketTypes.PUBLISH, TopicAlias=17))
    reason, _props = client.disconnects.get(timeout=20)
    assert reason.value == TOPIC_ALIAS_INVALID


# Topic aliases, broker to client -----------------------------------------------------------------------


def _publish_topic_and_alias(body: bytes) -> tuple[str, bytes]:
    """A QoS 0 PUBLISH's topic and its property block (a short one: its length in one byte)."""
    end = 2 + struct.unpack("!H", body[:2])[0]
    return body[2:end].decode(), body[end + 1 : end + 1 + body[end]]


@SWITCHBOARD_OVER_TCP_AND_WS
def test_broker_sends_topic_aliases_up_to_the_clients_maximum_MQTT_3_3_2_11(
    v5_port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """A client announcing Topic Alias Maximum 1: the first PUBLISH on a topic carries topic and alias 1, the
    next an empty topic and alias 1; a second topic (past its maximum) comes with its name and no alias."""
    first, second = new_topic(), new_topic()
    client = raw(v5_port)
    client.send(raw_connect(f"aliasout-{secrets.token_hex(3)}", properties=b"\x03\x22\x00\x01"))
    assert client.expect(CONNACK).body[1] == 0
    for index, topic in enumerate((first, second), start=1):
        name = topic.encode()
        client.send(
            packet(
                SUBSCRIBE, 0b0010, struct.pack("!H", index) + b"\x00" + struct.pack("!H", len(name)) + name + b"\x00"
            )
        )
        client.expect(SUBACK)
    publisher = clients(v5_port)
    publisher.connect()
    for topic in (first, first, second):
        publisher.publish(topic, b"m", 1)
    got = [_publish_topic_and_alias(client.expect(PUBLISH).body) for _ in range(3)]
    assert got == [(first, b"\x23\x00\x01"), ("", b"\x23\x00\x01"), (second, b"")]
