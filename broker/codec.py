"""Override: strict UTF-8 for topic names and filters, which amqtt's codec does not check.

amqtt 0.12.1's ``decode_string`` turns ill-formed UTF-8 into the text of a Python bytes literal
(``"b'a\\xffb'"``) instead of failing, so a PUBLISH to an invalid topic was routed under a made-up
name. MQTT 3.1.1 says the server MUST close the connection [MQTT-1.5.3-1]. The connection checks
these bytes before handing the packet to amqtt's decoder.
"""

from __future__ import annotations

import struct

from amqtt.mqtt.packet import PUBLISH, SUBSCRIBE, UNSUBSCRIBE


class MalformedString(ValueError):
    """A length-prefixed string is cut short or is not UTF-8."""


def check_strings(packet_type: int, body: bytes) -> None:
    """Raise MalformedString when a topic name (PUBLISH) or a filter (SUBSCRIBE, UNSUBSCRIBE) is bad."""
    if packet_type == PUBLISH:
        _string_at(body, 0)
    elif packet_type in (SUBSCRIBE, UNSUBSCRIBE):
        position = 2  # after the packet id
        while position < len(body):
            position = _string_at(body, position) + (1 if packet_type == SUBSCRIBE else 0)


def _string_at(body: bytes, position: int) -> int:
    """Check the string at ``position``; return where the next field starts."""
    if position + 2 > len(body):
        raise MalformedString("a string's length is cut short")
    (length,) = struct.unpack_from("!H", body, position)
    end = position + 2 + length
    if end > len(body):
        raise MalformedString("a string is longer than the packet")
    try:
        body[position + 2 : end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedString(f"ill-formed UTF-8 at byte {exc.start} of a topic [MQTT-1.5.3-1]") from None
    return end


def encode_publish(topic: str, payload: bytes, qos: int, packet_id: int | None, *, dup: bool, retain: bool) -> bytes:
    """A PUBLISH packet, encoded directly: fan-out sends one per subscriber, so this is the hot path
    (amqtt's PublishPacket.build(...).to_bytes() builds four objects per packet)."""
    name = topic.encode()
    length = 2 + len(name) + (2 if qos else 0) + len(payload)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    id_bytes = packet_id.to_bytes(2, "big") if qos and packet_id is not None else b""
    return b"".join((bytes((first,)), remaining_length(length), len(name).to_bytes(2, "big"), name, id_bytes, payload))


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
