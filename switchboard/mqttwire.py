"""MQTT 3.1.1 wire primitives shared by the services that speak MQTT on bytes (no library codec).

The broker's codec (``broker.codec``) and the bridge's client (``bridge.mqtt_client``) both frame packets
with the fixed header's remaining length [MQTT-2.2.3] and write length-prefixed UTF-8 strings
[MQTT-1.5.3]; services do not import each other, so these live here. Also the two packets a client sends
to set itself up (CONNECT, SUBSCRIBE), which the benchmarks' load generators use as well.
"""

from __future__ import annotations

import struct


class Malformed(ValueError):
    """A packet whose layout breaks MQTT 3.1.1; the message says what is wrong."""


def fixed_header(data: bytes, position: int) -> tuple[int, int] | None:
    """The remaining length and the header's size at ``position``; None when more bytes are needed.
    Raises Malformed for a length of more than four bytes [MQTT-2.2.3]."""
    multiplier, length, index = 1, 0, position + 1
    end = len(data)
    while True:
        if index >= end:
            return None
        byte = data[index]
        length += (byte & 0x7F) * multiplier
        index += 1
        if not byte & 0x80:
            return length, index - position
        if multiplier == 128**3:
            raise Malformed("remaining length of more than 4 bytes [MQTT-2.2.3]")
        multiplier *= 128


def remaining_length(length: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if length < 128:
        return bytes((length,))
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def encode_string(value: str) -> bytes:
    """A UTF-8 string with its two-byte length [MQTT-1.5.3]."""
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str, user: str | None = None, password: str | None = None, *, keepalive: int = 0, clean: bool = True
) -> bytes:
    """CONNECT at protocol level 4 (MQTT 3.1.1), without a will."""
    flags = (0x02 if clean else 0) | (0x80 if user else 0) | (0x40 if password else 0)
    payload = encode_string(client_id)
    for field in (user, password):
        payload += encode_string(field) if field else b""
    body = encode_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(filters: list[tuple[str, int]], *, packet_id: int) -> bytes:
    """SUBSCRIBE of every (filter, QoS) pair in one packet (fixed-header flags 0b0010 [MQTT-3.8.1-1])."""
    body = struct.pack("!H", packet_id) + b"".join(encode_string(f) + bytes([qos]) for f, qos in filters)
    return b"\x82" + remaining_length(len(body)) + body
