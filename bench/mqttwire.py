"""Pre-encoded MQTT 3.1.1 packets for the load generators (encoding by hand keeps the client cheap)."""

from __future__ import annotations

import struct

from broker.codec import encode_publish
from switchboard.mqttwire import connect_packet as connect_packet
from switchboard.mqttwire import subscribe_packet as shared_subscribe_packet


def subscribe_packet(topic_filter: str, qos: int, *, packet_id: int) -> bytes:
    return shared_subscribe_packet([(topic_filter, qos)], packet_id=packet_id)


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    return encode_publish(topic, payload, qos, packet_id if qos else None, dup=False, retain=False)


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)
