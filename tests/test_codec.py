"""broker.codec: the hand-written PUBLISH encoder matches amqtt's, and topic strings are strict UTF-8."""

from __future__ import annotations

import struct

import pytest
from amqtt.mqtt.packet import PUBLISH, SUBSCRIBE
from amqtt.mqtt.publish import PublishPacket

from broker.codec import MalformedString, PublishEncoder, check_strings, encode_publish


@pytest.mark.parametrize(
    ("topic", "payload", "qos", "packet_id", "dup", "retain"),
    [
        ("a/b", b"x" * 300, 1, 7, True, False),
        ("t", b"", 0, None, False, True),
        ("é/x", b"y" * 20000, 2, 65535, False, False),
    ],
)
def test_encode_publish_matches_amqtt(
    topic: str, payload: bytes, qos: int, packet_id: int | None, dup: bool, retain: bool
) -> None:
    expected = PublishPacket.build(topic, payload, packet_id, dup, qos, retain).to_bytes()
    assert encode_publish(topic, payload, qos, packet_id, dup=dup, retain=retain) == expected
    encoder = PublishEncoder()  # the fan-out encoder: the same bytes, for each copy of one message
    for _copy in range(2):
        assert encoder.encode(topic, payload, qos, packet_id, dup=dup, retain=retain) == expected
    other_id = None if packet_id is None else packet_id % 65535 + 1
    assert encoder.encode(topic, payload, qos, other_id, dup=dup, retain=retain) == encode_publish(
        topic, payload, qos, other_id, dup=dup, retain=retain
    )


def test_ill_formed_utf8_is_refused() -> None:
    """[MQTT-1.5.3-1]; amqtt's own decoder turned such bytes into the text "b'...'"."""
    check_strings(PUBLISH, struct.pack("!H", 3) + b"a/b" + b"payload")
    with pytest.raises(MalformedString):
        check_strings(PUBLISH, struct.pack("!H", 3) + b"a\xffb")
    with pytest.raises(MalformedString):
        check_strings(
            SUBSCRIBE, b"\x00\x01" + struct.pack("!H", 2) + b"ok" + b"\x00" + struct.pack("!H", 1) + b"\xc3" + b"\x00"
        )
    with pytest.raises(MalformedString):
        check_strings(PUBLISH, struct.pack("!H", 10) + b"short")
