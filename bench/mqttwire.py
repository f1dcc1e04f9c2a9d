"""Pre-encoded MQTT 3.1.1 packets for the load generators (encoding by hand keeps the client cheap)."""

from __future__ import annotations

import struct

from broker.codec import encode_publish, remaining_length


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str, user: str | None = None, password: str | None = None, *, keepalive: int = 0, clean: bool = True
) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if user else 0) | (0x40 if password else 0)
    payload = _string(client_id) + (_string(user) if user else b"") + (_string(password) if password else b"")
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int, *, packet_id: int) -> bytes:
    body = struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    return encode_publish(topic, payload, qos, packet_id if qos else None, dup=False, retain=False)


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)
