"""MQTT 3.1.1 rules checked on a packet's raw bytes, beyond its layout (which ``broker.codec`` checks).

Pure functions: each takes a packet's fixed-header flags and body (the bytes after the remaining length)
and returns the reason to close the connection, naming the rule, or None when the packet is fine. The
connection calls them for every packet but PUBLISH (``broker.handle_publish`` checks its own, on the
hot path). amqtt's decoder hid some of these (it substituted a random ``amqtt/...`` id for an empty client
id, and accepted an UNSUBSCRIBE with no filter). Layout problems (a string cut short) are left to the
decoders in ``broker.codec``.
"""

from __future__ import annotations

import struct

from broker.codec import PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE

_NAMES = {SUBSCRIBE: "SUBSCRIBE", UNSUBSCRIBE: "UNSUBSCRIBE", PUBREL: "PUBREL"}
_FLAG_RULES = {SUBSCRIBE: "MQTT-3.8.1-1", UNSUBSCRIBE: "MQTT-3.10.1-1", PUBREL: "MQTT-3.6.1-1"}
_EMPTY_RULES = {SUBSCRIBE: "MQTT-3.8.3-3", UNSUBSCRIBE: "MQTT-3.10.3-2"}
CLEAN_SESSION = 0x02


def violation(packet_type: int, flags: int, body: bytes) -> str | None:
    """Why this packet breaks MQTT 3.1.1, or None. CONNECT is checked by ``rejected_client_id``."""
    if packet_type in _FLAG_RULES and flags != 0b0010:
        return f"{_NAMES[packet_type]} with fixed-header flags {flags:04b}, not 0010 [{_FLAG_RULES[packet_type]}]"
    if packet_type == PUBLISH:
        return _publish(flags, body)
    if packet_type in (SUBSCRIBE, UNSUBSCRIBE):
        return _filters(packet_type, body)
    return None


def rejected_client_id(body: bytes) -> str | None:
    """Why a CONNECT's client id must be refused with CONNACK 0x02: a zero-length id with clean session 0
    [MQTT-3.1.3-8]. None when it is acceptable (or the CONNECT is too malformed to tell: the decoder says)."""
    name = _string_at(body, 0)
    if name is None:
        return None
    position = name[1]  # after the protocol name: level, flags, keep-alive, then the client id
    if position + 6 > len(body):
        return None
    connect_flags = body[position + 1]
    (id_length,) = struct.unpack_from("!H", body, position + 4)
    if id_length == 0 and not connect_flags & CLEAN_SESSION:
        return "zero-length client id with clean session 0 [MQTT-3.1.3-8]"
    return None


def _publish(flags: int, body: bytes) -> str | None:
    found = _string_at(body, 0)
    if found is None:
        return None
    topic, end = found
    if b"\x00" in topic:
        return "PUBLISH topic name holds U+0000 [MQTT-1.5.3-2]"
    qos = (flags >> 1) & 0x03
    if qos and end + 2 <= len(body) and body[end : end + 2] == b"\x00\x00":
        return f"PUBLISH at QoS {qos} with packet identifier 0 [MQTT-2.3.1-1]"
    return None


def _filters(packet_type: int, body: bytes) -> str | None:
    name = _NAMES[packet_type]
    if len(body) < 2:
        return f"{name} without a packet identifier"
    if body[:2] == b"\x00\x00":
        return f"{name} with packet identifier 0 [MQTT-2.3.1-1]"
    if len(body) == 2:
        return f"{name} without any topic filter [{_EMPTY_RULES[packet_type]}]"
    position = 2
    while position < len(body):
        found = _string_at(body, position)
        if found is None:
            return None  # cut short: the decoder reports it
        topic_filter, position = found
        if b"\x00" in topic_filter:
            return f"{name} topic filter holds U+0000 [MQTT-1.5.3-2]"
        if packet_type == SUBSCRIBE:
            position += 1  # the requested QoS
    return None


def _string_at(body: bytes, position: int) -> tuple[bytes, int] | None:
    """The length-prefixed string at ``position`` and where the next field starts; None if cut short."""
    if position + 2 > len(body):
        return None
    (length,) = struct.unpack_from("!H", body, position)
    end = position + 2 + length
    return None if end > len(body) else (body[position + 2 : end], end)
