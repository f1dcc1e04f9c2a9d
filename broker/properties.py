"""MQTT 5 properties [MQTT 5.0 §2.2.2]: every property identifier, its type, and which packets may carry it.

A property block is a variable byte integer (its length) followed by (identifier, value) pairs. Decoding
is strict: an unknown identifier, a property the packet may not carry, a property given twice (all but
User Property, and Subscription Identifier in PUBLISH), a value cut short or ill-formed UTF-8 raise
:class:`broker.codec.Malformed` or :class:`PropertyError` naming the property, and the connection is
closed with DISCONNECT 0x81 (malformed) or 0x82 (protocol error).

Values are ``int`` (byte, two- and four-byte integers, variable byte integers), ``str`` (UTF-8 strings),
``bytes`` (binary data); User Properties are a list of ``(name, value)`` pairs kept in order, and
Subscription Identifiers a list of ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from broker.codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    Malformed,
    ProtocolViolation,
)
from switchboard.mqttwire import remaining_length

#: AUTH [MQTT 5.0 §3.15]: packet type 15 (MQTT 3.1.1 reserved it).
AUTH = 15
#: Will properties travel in CONNECT's payload; this pseudo packet type names where they may appear.
WILL = 0


class PropertyError(ProtocolViolation):
    """A well-formed property that breaks a rule (given twice, not allowed in this packet): protocol error."""


class Type(IntEnum):
    BYTE = 1
    TWO = 2
    FOUR = 4
    VARINT = 5
    STRING = 6
    BINARY = 7
    PAIR = 8


class P(IntEnum):
    """Property identifiers [MQTT 5.0 §2.2.2.2]."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP)
#: identifier -> (type, the packets that may carry it)
SPEC: dict[int, tuple[Type, frozenset[int]]] = {
    P.PAYLOAD_FORMAT_INDICATOR: (Type.BYTE, frozenset((PUBLISH, WILL))),
    P.MESSAGE_EXPIRY_INTERVAL: (Type.FOUR, frozenset((PUBLISH, WILL))),
    P.CONTENT_TYPE: (Type.STRING, frozenset((PUBLISH, WILL))),
    P.RESPONSE_TOPIC: (Type.STRING, frozenset((PUBLISH, WILL))),
    P.CORRELATION_DATA: (Type.BINARY, frozenset((PUBLISH, WILL))),
    P.SUBSCRIPTION_IDENTIFIER: (Type.VARINT, frozenset((PUBLISH, SUBSCRIBE))),
    P.SESSION_EXPIRY_INTERVAL: (Type.FOUR, frozenset((CONNECT, CONNACK, DISCONNECT))),
    P.ASSIGNED_CLIENT_IDENTIFIER: (Type.STRING, frozenset((CONNACK,))),
    P.SERVER_KEEP_ALIVE: (Type.TWO, frozenset((CONNACK,))),
    P.AUTHENTICATION_METHOD: (Type.STRING, frozenset((CONNECT, CONNACK, AUTH))),
    P.AUTHENTICATION_DATA: (Type.BINARY, frozenset((CONNECT, CONNACK, AUTH))),
    P.REQUEST_PROBLEM_INFORMATION: (Type.BYTE, frozenset((CONNECT,))),
    P.WILL_DELAY_INTERVAL: (Type.FOUR, frozenset((WILL,))),
    P.REQUEST_RESPONSE_INFORMATION: (Type.BYTE, frozenset((CONNECT,))),
    P.RESPONSE_INFORMATION: (Type.STRING, frozenset((CONNACK,))),
    P.SERVER_REFERENCE: (Type.STRING, frozenset((CONNACK, DISCONNECT))),
    P.REASON_STRING: (Type.STRING, frozenset((CONNACK, *_ACKS, SUBACK, UNSUBACK, DISCONNECT, AUTH))),
    P.RECEIVE_MAXIMUM: (Type.TWO, frozenset((CONNECT, CONNACK))),
    P.TOPIC_ALIAS_MAXIMUM: (Type.TWO, frozenset((CONNECT, CONNACK))),
    P.TOPIC_ALIAS: (Type.TWO, frozenset((PUBLISH,))),
    P.MAXIMUM_QOS: (Type.BYTE, frozenset((CONNACK,))),
    P.RETAIN_AVAILABLE: (Type.BYTE, frozenset((CONNACK,))),
    P.USER_PROPERTY: (
        Type.PAIR,
        frozenset((CONNECT, CONNACK, PUBLISH, WILL, *_ACKS, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT))
        | {AUTH},
    ),
    P.MAXIMUM_PACKET_SIZE: (Type.FOUR, frozenset((CONNECT, CONNACK))),
    P.WILDCARD_SUBSCRIPTION_AVAILABLE: (Type.BYTE, frozenset((CONNACK,))),
    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (Type.BYTE, frozenset((CONNACK,))),
    P.SHARED_SUBSCRIPTION_AVAILABLE: (Type.BYTE, frozenset((CONNACK,))),
}
_WHERE = {WILL: "will properties", CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK"}
_WHERE |= {PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK"}
_WHERE |= {UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", DISCONNECT: "DISCONNECT", AUTH: "AUTH"}
#: Properties a PUBLISH passes on to its subscribers unchanged [MQTT-3.3.2-15 .. -20, MQTT-3.3.2-4].
FORWARDED = (P.PAYLOAD_FORMAT_INDICATOR, P.CONTENT_TYPE, P.RESPONSE_TOPIC, P.CORRELATION_DATA)


def _name(identifier: int) -> str:
    try:
        return P(identifier).name.replace("_", " ").title()
    except ValueError:
        return f"0x{identifier:02X}"


@dataclass(slots=True)
class Properties:
    """One packet's properties: ``values`` by identifier, user properties and subscription ids in order."""

    values: dict[int, int | str | bytes] = field(default_factory=dict)
    user: list[tuple[str, str]] = field(default_factory=list)
    subscription_ids: list[int] = field(default_factory=list)

    def get_int(self, identifier: int, default: int | None = None) -> int | None:
        value = self.values.get(identifier, default)
        return value if isinstance(value, int) else default

    def get_str(self, identifier: int) -> str | None:
        value = self.values.get(identifier)
        return value if isinstance(value, str) else None

    def get_bytes(self, identifier: int) -> bytes | None:
        value = self.values.get(identifier)
        return value if isinstance(value, bytes) else None

    def __bool__(self) -> bool:
        return bool(self.values or self.user or self.subscription_ids)


# Variable byte integers [MQTT 5.0 §1.5.5] ------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"{value} does not fit a variable byte integer")
    return remaining_length(value)  # the same encoding as a packet's remaining length


def decode_varint(body: bytes, position: int, what: str) -> tuple[int, int]:
    """The variable byte integer at ``position`` and where the next field starts."""
    value, multiplier = 0, 1
    for index in range(position, min(position + 4, len(body))):
        byte = body[index]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return value, index + 1
        multiplier *= 128
    if len(body) - position >= 4:
        raise Malformed(f"the {what} is a variable byte integer of more than 4 bytes [MQTT-1.5.5-1]")
    raise Malformed(f"the {what} is cut short")


# Decoding ----------------------------------------------------------------------------------------------


def decode(body: bytes, position: int, packet: int) -> tuple[Properties, int]:
    """The property block at ``position`` of a ``packet`` (a packet type, or WILL); where the next field starts."""
    length, position = decode_varint(body, position, f"{_WHERE[packet]} property length")
    end = position + length
    if end > len(body):
        raise Malformed(f"the {_WHERE[packet]} properties are longer than the packet")
    props = Properties()
    while position < end:
        identifier, position = decode_varint(body, position, "property identifier")
        spec = SPEC.get(identifier)
        if spec is None:
            raise Malformed(f"unknown property identifier 0x{identifier:02X} in {_WHERE[packet]}")
        kind, allowed = spec
        if packet not in allowed:
            raise PropertyError(f"property {_name(identifier)} is not allowed in {_WHERE[packet]} [MQTT-2.2.2-2]")
        value, position = _value(body, position, end, kind, identifier)
        if identifier == P.USER_PROPERTY:
            assert isinstance(value, tuple)
            props.user.append(value)
        elif identifier == P.SUBSCRIPTION_IDENTIFIER:
            assert isinstance(value, int)
            if value == 0:
                raise PropertyError("Subscription Identifier 0 [MQTT-3.8.2-1]")
            if props.subscription_ids and packet == SUBSCRIBE:
                raise PropertyError("Subscription Identifier given twice in SUBSCRIBE [MQTT-2.2.2-2]")
            props.subscription_ids.append(value)
        elif identifier in props.values:
            raise PropertyError(f"property {_name(identifier)} given twice in {_WHERE[packet]} [MQTT-2.2.2-2]")
        else:
            assert not isinstance(value, tuple)
            props.values[identifier] = value
    return props, end


Value = int | str | bytes | tuple[str, str]


def _value(body: bytes, position: int, end: int, kind: Type, identifier: int) -> tuple[Value, int]:
    what = f"value of property {_name(identifier)}"
    if kind is Type.BYTE or kind is Type.TWO or kind is Type.FOUR:
        size = 1 if kind is Type.BYTE else int(kind)
        if position + size > end:
            raise Malformed(f"the {what} is cut short")
        return int.from_bytes(body[position : position + size], "big"), position + size
    if kind is Type.VARINT:
        value, after = decode_varint(body[:end], position, what)
        return value, after
    if kind is Type.PAIR:
        name, position = _string(body, position, end, f"name of a {_name(identifier)}")
        value_text, position = _string(body, position, end, f"value of a {_name(identifier)}")
        return (name, value_text), position
    if kind is Type.STRING:
        return _string(body, position, end, what)
    return _binary(body, position, end, what)


def _binary(body: bytes, position: int, end: int, what: str) -> tuple[bytes, int]:
    if position + 2 > end:
        raise Malformed(f"the length of the {what} is cut short")
    stop = position + 2 + ((body[position] << 8) | body[position + 1])
    if stop > end:
        raise Malformed(f"the {what} is longer than its property block")
    return bytes(body[position + 2 : stop]), stop


def _string(body: bytes, position: int, end: int, what: str) -> tuple[str, int]:
    raw, stop = _binary(body, position, end, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"ill-formed UTF-8 at byte {exc.start} of the {what} [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise Malformed(f"the {what} holds U+0000 [MQTT-1.5.4-2]")
    return text, stop


# Encoding ----------------------------------------------------------------------------------------------


def encode(props: Properties | None) -> bytes:
    """The property block (its length first) for ``props``; ``b"\\x00"`` for none."""
    if not props:
        return b"\x00"
    body = encode_fields(props)
    return encode_varint(len(body)) + body


def encode_fields(props: Properties) -> bytes:
    """The (identifier, value) pairs of ``props``, without the block's length."""
    out = bytearray()
    for identifier, value in props.values.items():
        out += _field(identifier, value)
    for pair in props.user:
        out += _field(P.USER_PROPERTY, pair)
    for sub_id in props.subscription_ids:
        out += _field(P.SUBSCRIPTION_IDENTIFIER, sub_id)
    return bytes(out)


def _field(identifier: int, value: Value) -> bytes:
    kind = SPEC[identifier][0]
    head = encode_varint(identifier)
    if kind is Type.PAIR:
        assert isinstance(value, tuple)
        return head + _bin(value[0].encode()) + _bin(value[1].encode())
    if kind is Type.STRING:
        assert isinstance(value, str)
        return head + _bin(value.encode())
    if kind is Type.BINARY:
        assert isinstance(value, bytes)
        return head + _bin(value)
    assert isinstance(value, int)
    if kind is Type.VARINT:
        return head + encode_varint(value)
    return head + value.to_bytes(1 if kind is Type.BYTE else int(kind), "big")


def _bin(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def forwarded(props: Properties) -> bytes:
    """The fields of a PUBLISH's properties that go on to its subscribers unchanged (user properties, response
    topic, correlation data, content type, payload format indicator); not the topic alias, the subscription
    ids (each subscriber gets its own) or the message expiry (sent with the time left)."""
    kept = Properties({key: props.values[key] for key in FORWARDED if key in props.values}, list(props.user))
    return encode_fields(kept) if kept else b""
