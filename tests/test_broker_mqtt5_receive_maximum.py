"""The broker's own Receive Maximum [MQTT 5.0 §3.2.2.3.3]: announced in CONNACK, and a client that sends more
QoS 1/2 PUBLISHes than that without their acknowledgement is disconnected with 0x93 [MQTT-3.3.4-7, -8]. paho
keeps to it, so the misbehaving client is raw bytes (tests/rawmqtt.py)."""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from broker.v5 import RECEIVE_MAXIMUM
from tests.mqtt5 import SWITCHBOARD_OVER_TCP_AND_WS, V5Client, new_topic, raw_connect
from tests.rawmqtt import CONNACK, DISCONNECT, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawClient, packet

RECEIVE_MAXIMUM_EXCEEDED = 0x93


def _qos2(topic: str, packet_id: int) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", packet_id) + b"\x00" + b"payload"
    return packet(PUBLISH, 2 << 1, body)


@SWITCHBOARD_OVER_TCP_AND_WS
def test_connack_announces_the_receive_maximum_MQTT_3_2_2_3_3(v5_port: int, clients: Callable[..., V5Client]) -> None:
    _flags, _reason, connack = clients(v5_port).connect()
    assert connack.ReceiveMaximum == RECEIVE_MAXIMUM


@SWITCHBOARD_OVER_TCP_AND_WS
def test_more_unacknowledged_publishes_than_the_receive_maximum_get_disconnect_0x93_MQTT_3_3_4_8(
    v5_port: int, raw: Callable[[int], RawClient]
) -> None:
    """QoS 2 PUBLISHes whose PUBREL never comes stay unacknowledged (no PUBCOMP). Up to the Receive Maximum they
    are fine; a PUBREL frees one slot; one more than the maximum gets DISCONNECT 0x93 and the connection closes."""
    client, topic = raw(v5_port), new_topic()
    client.send(raw_connect(f"flood-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    for packet_id in range(1, RECEIVE_MAXIMUM + 1):
        client.send(_qos2(topic, packet_id))
        assert client.expect(PUBREC).packet_id == packet_id
    client.ack(PUBREL, 1)
    assert client.expect(PUBCOMP).packet_id == 1
    client.send(_qos2(topic, RECEIVE_MAXIMUM + 1))  # back to the maximum: allowed
    assert client.expect(PUBREC).packet_id == RECEIVE_MAXIMUM + 1
    client.send(_qos2(topic, RECEIVE_MAXIMUM + 2))  # one over
    got = client.expect(DISCONNECT)
    assert got.body[0] == RECEIVE_MAXIMUM_EXCEEDED
    assert client.read(10) is None
