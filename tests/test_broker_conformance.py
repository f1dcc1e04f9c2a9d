"""MQTT 3.1.1 rules the broker enforces on raw bytes (broker/conformance.py), one test per rule.

Each violation closes the offender's connection with a log line naming the rule, while another client
carries on. The last test sends the same bytes to Mosquitto, which closes the connection too.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Callable

import pytest

from broker.conformance import rejected_client_id, violation
from tests.helpers import Stack
from tests.rawmqtt import (
    PINGREQ,
    PINGRESP,
    PUBLISH,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    RawClient,
    connect_packet,
    packet,
)

Raw = Callable[[int], RawClient]


def _string(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


# The offending bytes, sent after a good CONNECT, with the rule each breaks.
SUBSCRIBE_NO_FILTER = packet(SUBSCRIBE, 2, b"\x00\x01")
UNSUBSCRIBE_NO_FILTER = packet(UNSUBSCRIBE, 2, b"\x00\x01")
SUBSCRIBE_NUL = packet(SUBSCRIBE, 2, b"\x00\x01" + _string(b"a/\x00/b") + b"\x00")
UNSUBSCRIBE_NUL = packet(UNSUBSCRIBE, 2, b"\x00\x01" + _string(b"a\x00"))
PUBLISH_NUL = packet(PUBLISH, 0, _string(b"a/\x00") + b"hello")
SUBSCRIBE_FLAGS = packet(SUBSCRIBE, 0, b"\x00\x01" + _string(b"a/b") + b"\x00")
UNSUBSCRIBE_FLAGS = packet(UNSUBSCRIBE, 0, b"\x00\x01" + _string(b"a/b"))
PUBREL_FLAGS = packet(PUBREL, 0, b"\x00\x01")
PUBLISH_ID_0 = packet(PUBLISH, 2, _string(b"a/b") + b"\x00\x00" + b"hello")
SUBSCRIBE_ID_0 = packet(SUBSCRIBE, 2, b"\x00\x00" + _string(b"a/b") + b"\x00")
UNSUBSCRIBE_ID_0 = packet(UNSUBSCRIBE, 2, b"\x00\x00" + _string(b"a/b"))


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _closes(stack: Stack, raw: Raw, data: bytes, rule: str) -> None:
    """After a good CONNECT, ``data`` closes the connection with a log line naming ``rule``; a bystander
    connected before and a client connecting after are both served."""
    bystander = raw(stack.mqtt_port)
    assert bystander.connect(_id("bystander")).body == b"\x00\x00"
    bad = raw(stack.mqtt_port)
    assert bad.connect(_id("bad")).body == b"\x00\x00"
    bad.send(data)
    assert bad.closed_by_broker()
    stack.out.wait_for(re.escape(f"[{rule}]"), 10)
    bystander.send(packet(PINGREQ, 0, b""))
    assert bystander.expect(PINGRESP)
    topic = f"alive/{_id('t')}"
    assert bystander.subscribe((topic, 0)) == [0]
    talker = raw(stack.mqtt_port)
    assert talker.connect(_id("after")).body == b"\x00\x00"
    talker.publish(topic, b"still here")
    assert bystander.publishes(1)[0].payload == b"still here"


def test_mqtt_3_1_3_8_empty_client_id_without_clean_session_is_rejected(open_stack: Stack, raw: Raw) -> None:
    """amqtt's decoder would substitute a random id; the raw bytes are checked instead."""
    client = raw(open_stack.mqtt_port)
    connack = client.connect("", clean=False)
    assert connack.body == b"\x00\x02"  # identifier rejected
    assert client.closed_by_broker()
    open_stack.out.wait_for(re.escape("[MQTT-3.1.3-8]"), 10)
    fine = raw(open_stack.mqtt_port)
    assert fine.connect("", clean=True).body == b"\x00\x00"  # an empty id with clean session 1 is fine


def test_mqtt_3_8_3_3_subscribe_without_a_filter_closes(open_stack: Stack, raw: Raw) -> None:
    _closes(open_stack, raw, SUBSCRIBE_NO_FILTER, "MQTT-3.8.3-3")


def test_mqtt_3_10_3_2_unsubscribe_without_a_filter_closes(open_stack: Stack, raw: Raw) -> None:
    _closes(open_stack, raw, UNSUBSCRIBE_NO_FILTER, "MQTT-3.10.3-2")


@pytest.mark.parametrize(
    "data", [SUBSCRIBE_NUL, UNSUBSCRIBE_NUL, PUBLISH_NUL], ids=["subscribe", "unsubscribe", "publish"]
)
def test_mqtt_1_5_3_2_nul_in_a_topic_closes(open_stack: Stack, raw: Raw, data: bytes) -> None:
    _closes(open_stack, raw, data, "MQTT-1.5.3-2")


def test_mqtt_3_8_1_1_subscribe_flags_other_than_0010_close(open_stack: Stack, raw: Raw) -> None:
    _closes(open_stack, raw, SUBSCRIBE_FLAGS, "MQTT-3.8.1-1")


def test_mqtt_3_10_1_1_unsubscribe_flags_other_than_0010_close(open_stack: Stack, raw: Raw) -> None:
    _closes(open_stack, raw, UNSUBSCRIBE_FLAGS, "MQTT-3.10.1-1")


def test_mqtt_3_6_1_1_pubrel_flags_other_than_0010_close(open_stack: Stack, raw: Raw) -> None:
    _closes(open_stack, raw, PUBREL_FLAGS, "MQTT-3.6.1-1")


@pytest.mark.parametrize(
    "data", [PUBLISH_ID_0, SUBSCRIBE_ID_0, UNSUBSCRIBE_ID_0], ids=["publish-qos1", "subscribe", "unsubscribe"]
)
def test_mqtt_2_3_1_1_packet_identifier_0_closes(open_stack: Stack, raw: Raw, data: bytes) -> None:
    _closes(open_stack, raw, data, "MQTT-2.3.1-1")


def test_well_formed_packets_pass_the_checks() -> None:
    """No false alarms: the checks leave good packets of every kind they look at alone."""
    for data in (
        packet(SUBSCRIBE, 2, b"\x00\x01" + _string(b"a/+") + b"\x01" + _string(b"#") + b"\x00"),
        packet(UNSUBSCRIBE, 2, b"\x00\x01" + _string(b"a/b")),
        packet(PUBREL, 2, b"\x00\x01"),
        packet(PUBLISH, 0, _string(b"a/b") + b"\x00\x00"),  # QoS 0: no packet id; the payload may be zeros
        packet(PUBLISH, 4, _string(b"a/b") + b"\x00\x07" + b"x"),
    ):
        assert violation(data[0] >> 4, data[0] & 0x0F, data[2:]) is None, data
    assert rejected_client_id(connect_packet("", clean=True)[2:]) is None
    assert rejected_client_id(connect_packet("id", clean=False)[2:]) is None
    assert rejected_client_id(connect_packet("", clean=False)[2:]) is not None


# Mosquitto, a broker nobody here wrote, closes the connection for the same bytes -----------------------


@pytest.mark.parametrize(
    "data",
    [
        SUBSCRIBE_NO_FILTER,
        UNSUBSCRIBE_NO_FILTER,
        SUBSCRIBE_NUL,
        UNSUBSCRIBE_NUL,
        PUBLISH_NUL,
        SUBSCRIBE_FLAGS,
        UNSUBSCRIBE_FLAGS,
        PUBREL_FLAGS,
        PUBLISH_ID_0,
        SUBSCRIBE_ID_0,
        UNSUBSCRIBE_ID_0,
    ],
)
def test_mosquitto_closes_for_the_same_bytes(mosquitto: int, raw: Raw, data: bytes) -> None:
    client = raw(mosquitto)
    assert client.connect(_id("bad")).body == b"\x00\x00"
    client.send(data)
    assert client.closed_by_broker()


def test_mosquitto_rejects_empty_client_id_without_clean_session(mosquitto: int, raw: Raw) -> None:
    client = raw(mosquitto)
    client.send(connect_packet("", clean=False))
    assert client.expect(2).body == b"\x00\x02"
    assert client.closed_by_broker()


def test_mosquitto_fixture_is_a_real_broker(mosquitto: int, raw: Raw) -> None:
    """The comparison means something only if Mosquitto serves good clients."""
    client = raw(mosquitto)
    assert client.connect(_id("ok")).body == b"\x00\x00"
    assert client.subscribe(("a/b", 0)) == [0]
