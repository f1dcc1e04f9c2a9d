"""The MQTT 5 forms of every packet [MQTT 5.0 §3], on bytes (no library codec); properties in ``broker.properties``.

Decoders take a packet's body (the bytes after the remaining length) and raise
:class:`broker.codec.Malformed` (the connection is closed with DISCONNECT 0x81) or
:class:`broker.codec.ProtocolViolation` (0x82) naming what is wrong. Encoders leave out what MQTT 5 lets
a sender leave out: an acknowledgement with reason 0x00 and no properties is the 3.1.1 four bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from broker.codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    NAMES,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    Connect,
    Malformed,
    MalformedString,
    ProtocolViolation,
    decode_credentials,
    read_binary,
    remaining_length,
)
from broker.properties import AUTH, WILL, P, Properties, decode, encode, encode_fields, encode_varint

__all__ = ["AUTH"]


class Reason(IntEnum):
    """MQTT 5 reason codes [MQTT 5.0 §2.4] the broker sends or understands."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


# Decoders ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ConnectV5(Connect):
    """A decoded MQTT 5 CONNECT [MQTT 5.0 §3.1]: the 3.1.1 fields, its properties and the will's."""

    properties: Properties = field(default_factory=Properties)
    will_properties: Properties = field(default_factory=Properties)

    @property
    def clean_start(self) -> bool:
        return bool(self.flags & 0x02)


def protocol_level(body: bytes) -> int | None:
    """The protocol level byte of a CONNECT body, None when it is too short to hold one."""
    if len(body) < 2:
        return None
    position = 2 + ((body[0] << 8) | body[1])
    return body[position] if position < len(body) else None


def decode_connect(body: bytes) -> ConnectV5:
    """CONNECT's variable header, properties and payload."""
    name, position = _string(body, 0, "protocol name")
    if position + 4 > len(body):
        raise Malformed("CONNECT cut short after the protocol name")
    level, flags = body[position], body[position + 1]
    (keep_alive,) = struct.unpack_from("!H", body, position + 2)
    props, position = decode(body, position + 4, CONNECT)
    client_id, position = _string(body, position, "client id")
    packet = ConnectV5(name, level, flags, keep_alive, client_id, properties=props)
    if packet.will_flag:
        packet.will_properties, position = decode(body, position, WILL)
        packet.will_topic, position = _string(body, position, "will topic")
        packet.will_payload, position = read_binary(body, position, "will payload")
    return decode_credentials(packet, body, position)


def decode_ack(kind: int, body: bytes) -> tuple[int, int, Properties]:
    """PUBACK, PUBREC, PUBREL or PUBCOMP: packet id, reason code (0 when left out) and properties."""
    if len(body) < 2:
        raise Malformed(f"{NAMES[kind]} of {len(body)} byte(s): no packet identifier")
    packet_id = (body[0] << 8) | body[1]
    if len(body) == 2:
        return packet_id, 0, Properties()
    if len(body) == 3:
        return packet_id, body[2], Properties()
    props, end = decode(body, 3, kind)
    if end != len(body):
        raise Malformed(f"{NAMES[kind]} has {len(body) - end} byte(s) after its properties")
    return packet_id, body[2], props


@dataclass(slots=True, frozen=True)
class SubscriptionRequest:
    """One filter of a SUBSCRIBE with its options [MQTT 5.0 §3.8.3.1]."""

    topic_filter: str
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int


def decode_subscribe(body: bytes) -> tuple[int, Properties, list[SubscriptionRequest]]:
    """SUBSCRIBE's packet id, properties and requests; reserved option bits set are malformed [MQTT-3.8.3-5]."""
    packet_id = _packet_id(body, "SUBSCRIBE")
    props, position = decode(body, 2, SUBSCRIBE)
    requests: list[SubscriptionRequest] = []
    while position < len(body):
        topic_filter, position = _string(body, position, "topic filter")
        if position >= len(body):
            raise Malformed("SUBSCRIBE topic filter without its subscription options")
        options = body[position]
        position += 1
        if options & 0xC0:
            raise Malformed(f"reserved subscription option bits set in 0x{options:02X} [MQTT-3.8.3-5]")
        qos, handling = options & 0x03, (options >> 4) & 0x03
        if qos == 3:
            raise Malformed("SUBSCRIBE with maximum QoS 3 [MQTT-3.8.3-4]")
        if handling == 3:
            raise ProtocolViolation("SUBSCRIBE with Retain Handling 3 [MQTT 5.0 §3.8.3.1]")
        requests.append(SubscriptionRequest(topic_filter, qos, bool(options & 0x04), bool(options & 0x08), handling))
    if not requests:
        raise ProtocolViolation("SUBSCRIBE without any topic filter [MQTT-3.8.3-2]")
    return packet_id, props, requests


def decode_unsubscribe(body: bytes) -> tuple[int, Properties, list[str]]:
    packet_id = _packet_id(body, "UNSUBSCRIBE")
    props, position = decode(body, 2, UNSUBSCRIBE)
    filters: list[str] = []
    while position < len(body):
        topic_filter, position = _string(body, position, "topic filter")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE without any topic filter [MQTT-3.10.3-2]")
    return packet_id, props, filters


def decode_reason(kind: int, body: bytes) -> tuple[int, Properties]:
    """DISCONNECT or AUTH: reason code (0 when left out) and properties."""
    if not body:
        return 0, Properties()
    if len(body) == 1:
        return body[0], Properties()
    props, end = decode(body, 1, kind)
    if end != len(body):
        raise Malformed(f"{NAMES.get(kind, 'AUTH')} has {len(body) - end} byte(s) after its properties")
    return body[0], props


# Encoders ----------------------------------------------------------------------------------------------


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + remaining_length(len(body)) + body


def encode_connack(session_present: bool, reason: int, props: Properties | None = None) -> bytes:
    flags = 1 if session_present and reason == Reason.SUCCESS else 0
    return _packet(CONNACK << 4, bytes((flags, reason)) + encode(props))


def encode_publish(
    topic: str, payload: bytes, qos: int, packet_id: int | None, *, dup: bool, retain: bool, fields: bytes = b""
) -> bytes:
    """A PUBLISH with the property ``fields`` (already encoded, without their length)."""
    name = topic.encode()
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    id_bytes = packet_id.to_bytes(2, "big") if qos and packet_id is not None else b""
    props = encode_varint(len(fields)) + fields
    length = 2 + len(name) + len(id_bytes) + len(props) + len(payload)
    return b"".join(
        (bytes((first,)), remaining_length(length), len(name).to_bytes(2, "big"), name, id_bytes, props, payload)
    )


def encode_ack(first_byte: int, packet_id: int, reason: int = 0, reason_string: str | None = None) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``broker.codec.*_BYTE``) with a reason code and reason string."""
    if reason == 0 and reason_string is None:
        return bytes((first_byte, 2, packet_id >> 8, packet_id & 0xFF))
    return _packet(first_byte, packet_id.to_bytes(2, "big") + bytes((reason,)) + _reason_props(reason_string))


def encode_suback(packet_id: int, codes: list[int], reason_string: str | None = None) -> bytes:
    return _packet(SUBACK << 4, packet_id.to_bytes(2, "big") + _reason_props(reason_string) + bytes(codes))


def encode_unsuback(packet_id: int, codes: list[int]) -> bytes:
    return _packet(UNSUBACK << 4, packet_id.to_bytes(2, "big") + b"\x00" + bytes(codes))


def encode_disconnect(reason: int, reason_string: str | None = None, props: Properties | None = None) -> bytes:
    if props is None:
        props = Properties()
    if reason_string is not None:
        props.values[P.REASON_STRING] = reason_string
    if not props and reason == 0:
        return bytes((DISCONNECT << 4, 0))
    return _packet(DISCONNECT << 4, bytes((reason,)) + encode(props))


def encode_auth(reason: int, props: Properties | None = None) -> bytes:
    return _packet(AUTH << 4, bytes((reason,)) + encode(props))


def _reason_props(reason_string: str | None) -> bytes:
    if reason_string is None:
        return b"\x00"
    fields = encode_fields(Properties({P.REASON_STRING: reason_string}))
    return encode_varint(len(fields)) + fields


# Fields ------------------------------------------------------------------------------------------------


def _packet_id(body: bytes, name: str) -> int:
    if len(body) < 2:
        raise Malformed(f"{name} without a packet identifier")
    packet_id = (body[0] << 8) | body[1]
    if not packet_id:
        raise ProtocolViolation(f"{name} with packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id


def _string(body: bytes, position: int, what: str) -> tuple[str, int]:
    raw, end = read_binary(body, position, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedString(f"ill-formed UTF-8 at byte {exc.start} of the {what} [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise MalformedString(f"the {what} holds U+0000 [MQTT-1.5.4-2]")
    return text, end
