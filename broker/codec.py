"""Every MQTT 3.1.1 encoder and decoder the broker uses, on bytes (no library codec).

Decoders take a packet's fixed-header flags and body (the bytes after the remaining length) and raise
:class:`Malformed` with a reason naming what is wrong; the connection closes on it. Strings are strict
UTF-8 [MQTT-1.5.3-1] (amqtt 0.12.1's decoder turned ill-formed bytes into the text ``"b'...'"``). The
rules that need more than the layout (empty client id with clean session 0, packet id 0, NUL in a
filter, fixed-header flags) are in ``broker.conformance``; the head of a PUBLISH (topic name, packet identifier)
is decoded by ``decode_publish_head`` for both protocols' handlers (``broker.handle_publish``,
``broker.publish_v5``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

from switchboard.mqttwire import Malformed, remaining_length
from switchboard.mqttwire import fixed_header as fixed_header  # re-exported: broker.transport frames with it

# Packet types [MQTT-2.2.1].
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
}

# CONNACK return codes [MQTT-3.2.2.3].
ACCEPTED, UNACCEPTABLE_PROTOCOL_VERSION, IDENTIFIER_REJECTED = 0x00, 0x01, 0x02
BAD_USERNAME_PASSWORD, NOT_AUTHORIZED = 0x04, 0x05
SUBACK_FAILURE = 0x80

PUBACK_BYTE, PUBREC_BYTE, PUBREL_BYTE, PUBCOMP_BYTE = 0x40, 0x50, 0x62, 0x70
PINGRESP_BYTES = b"\xd0\x00"


class ProtocolViolation(Exception):
    """The client broke MQTT 3.1.1; its connection is closed with this reason (naming the rule)."""


class MalformedString(Malformed):
    """A length-prefixed string is cut short or is not UTF-8."""


# Encoders -------------------------------------------------------------------------------------------


def encode_publish(topic: str, payload: bytes, qos: int, packet_id: int | None, *, dup: bool, retain: bool) -> bytes:
    """A PUBLISH packet: fan-out sends one per subscriber, so this is the hot path."""
    name = topic.encode()
    length = 2 + len(name) + (2 if qos else 0) + len(payload)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    id_bytes = packet_id.to_bytes(2, "big") if qos and packet_id is not None else b""
    return b"".join((bytes((first,)), remaining_length(length), len(name).to_bytes(2, "big"), name, id_bytes, payload))


class PublishEncoder:
    """Encodes the copies of one message for its subscribers: the fixed header and topic are built once
    per (message, QoS, flags) and only the packet id differs per copy. Remembers the last message only
    (a fan-out delivers one message to all its subscribers before the next); the identity check is safe
    because the encoder holds the objects it compares."""

    __slots__ = ("_first", "_head", "_payload", "_topic")

    def __init__(self) -> None:
        self._topic: str | None = None
        self._payload: bytes | None = None
        self._first = 0
        self._head = b""

    def encode(self, topic: str, payload: bytes, qos: int, packet_id: int | None, *, dup: bool, retain: bool) -> bytes:
        first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
        if topic is not self._topic or payload is not self._payload or first != self._first:
            name = topic.encode()
            length = 2 + len(name) + (2 if qos else 0) + len(payload)
            self._head = b"".join((bytes((first,)), remaining_length(length), len(name).to_bytes(2, "big"), name))
            self._topic, self._payload, self._first = topic, payload, first
        if qos and packet_id is not None:
            return b"".join((self._head, packet_id.to_bytes(2, "big"), payload))
        return self._head + payload


def encode_ack(first_byte: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``*_BYTE``) for ``packet_id``."""
    return bytes((first_byte, 2, packet_id >> 8, packet_id & 0xFF))


def encode_connack(session_present: bool, code: int) -> bytes:
    return bytes((0x20, 2, 1 if session_present and code == ACCEPTED else 0, code))


def encode_suback(packet_id: int, codes: list[int]) -> bytes:
    return b"".join((b"\x90", remaining_length(2 + len(codes)), packet_id.to_bytes(2, "big"), bytes(codes)))


def encode_unsuback(packet_id: int) -> bytes:
    return bytes((0xB0, 2, packet_id >> 8, packet_id & 0xFF))


# Decoders -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Connect:
    """A decoded CONNECT [MQTT-3.1]."""

    protocol_name: str
    level: int
    flags: int
    keep_alive: int
    client_id: str
    will_topic: str | None = None
    will_payload: bytes = b""
    username: str | None = None
    password: str | None = None

    @property
    def clean_session(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def will_flag(self) -> bool:
        return bool(self.flags & 0x04)

    @property
    def will_qos(self) -> int:
        return (self.flags >> 3) & 0x03

    @property
    def will_retain(self) -> bool:
        return bool(self.flags & 0x20)

    @property
    def password_flag(self) -> bool:
        return bool(self.flags & 0x40)

    @property
    def username_flag(self) -> bool:
        return bool(self.flags & 0x80)


C = TypeVar("C", bound=Connect)


def decode_publish_head(body: bytes, qos: int, invalid: type[Exception]) -> tuple[str, int, int]:
    """A PUBLISH's topic name, its packet identifier (0 at QoS 0) and where the rest begins [MQTT-3.3.2]. A topic
    name that is not UTF-8 raises ``invalid`` (MQTT 3.1.1: ProtocolViolation [MQTT-1.5.3-1]; MQTT 5: Malformed,
    DISCONNECT 0x81 [MQTT-1.5.4-1]); packet identifier 0 at QoS 1/2 is a violation [MQTT-2.3.1-1]. Checking the
    topic name's content (wildcards, U+0000; after a Topic Alias in MQTT 5) is the caller's."""
    size = len(body)
    if size < 2:
        raise Malformed("no topic name")
    end = 2 + ((body[0] << 8) | body[1])
    if end > size:
        raise Malformed("the topic name is longer than the packet")
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as exc:
        rule = "MQTT-1.5.4-1" if issubclass(invalid, Malformed) else "MQTT-1.5.3-1"  # MQTT 5's number, 3.1.1's
        raise invalid(f"ill-formed UTF-8 at byte {exc.start} of a PUBLISH topic name [{rule}]") from None
    if not qos:
        return topic, 0, end
    if size < end + 2:
        raise Malformed("no packet identifier")
    packet_id = (body[end] << 8) | body[end + 1]
    if not packet_id:
        raise ProtocolViolation(f"PUBLISH at QoS {qos} with packet identifier 0 [MQTT-2.3.1-1]")
    return topic, packet_id, end + 2


def decode_connect(body: bytes) -> Connect:
    """CONNECT's variable header and payload; a field cut short or ill-formed UTF-8 raises Malformed."""
    name, position = _string(body, 0, "protocol name")
    if position + 4 > len(body):
        raise Malformed("CONNECT cut short after the protocol name")
    level, flags = body[position], body[position + 1]
    (keep_alive,) = struct.unpack_from("!H", body, position + 2)
    client_id, position = _string(body, position + 4, "client id")
    packet = Connect(name, level, flags, keep_alive, client_id)
    if packet.will_flag:
        packet.will_topic, position = _string(body, position, "will topic")
        packet.will_payload, position = read_binary(body, position, "will message")
    return decode_credentials(packet, body, position)


def decode_credentials(packet: C, body: bytes, position: int) -> C:
    """The user name and password that end a CONNECT's payload (3.1.1 and 5 alike), into ``packet``."""
    if packet.username_flag:
        packet.username, position = _string(body, position, "user name")
    if packet.password_flag:
        password, position = read_binary(body, position, "password")
        try:
            packet.password = password.decode()
        except UnicodeDecodeError:
            raise Malformed("the password is not UTF-8 (Switchboard passwords and tokens are text)") from None
    if position != len(body):
        raise Malformed(f"CONNECT has {len(body) - position} unexpected byte(s) after its payload")
    return packet


def decode_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """SUBSCRIBE's packet id and (filter, requested QoS) pairs."""
    packet_id, position, requests = _packet_id(body, "SUBSCRIBE"), 2, []
    while position < len(body):
        topic_filter, position = _string(body, position, "topic filter")
        if position >= len(body):
            raise Malformed("SUBSCRIBE topic filter without its QoS byte")
        requests.append((topic_filter, body[position]))
        position += 1
    return packet_id, requests


def decode_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE's packet id and filters."""
    packet_id, position, filters = _packet_id(body, "UNSUBSCRIBE"), 2, []
    while position < len(body):
        topic_filter, position = _string(body, position, "topic filter")
        filters.append(topic_filter)
    return packet_id, filters


def decode_packet_id(kind: int, body: bytes) -> int:
    """The packet id of PUBACK, PUBREC, PUBREL or PUBCOMP (a body of exactly two bytes)."""
    if len(body) != 2:
        raise Malformed(f"malformed {NAMES[kind]}: {len(body)} bytes, not 2")
    return (body[0] << 8) | body[1]


def check_strings(packet_type: int, body: bytes) -> None:
    """Raise MalformedString when a topic name (PUBLISH) or a filter (SUBSCRIBE, UNSUBSCRIBE) is bad."""
    if packet_type == PUBLISH:
        _string(body, 0, "topic name")
    elif packet_type in (SUBSCRIBE, UNSUBSCRIBE):
        position = 2  # after the packet id
        while position < len(body):
            position = _string(body, position, "topic filter")[1] + (1 if packet_type == SUBSCRIBE else 0)


def _packet_id(body: bytes, name: str) -> int:
    if len(body) < 2:
        raise Malformed(f"{name} without a packet identifier")
    return (body[0] << 8) | body[1]


def read_binary(body: bytes, position: int, what: str) -> tuple[bytes, int]:
    """A two-byte length and that many bytes at ``position``, and where the next field starts."""
    if position + 2 > len(body):
        raise MalformedString(f"the {what}'s length is cut short")
    end = position + 2 + ((body[position] << 8) | body[position + 1])
    if end > len(body):
        raise MalformedString(f"the {what} is longer than the packet")
    return bytes(body[position + 2 : end]), end


def _string(body: bytes, position: int, what: str) -> tuple[str, int]:
    raw, end = read_binary(body, position, what)
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise MalformedString(f"ill-formed UTF-8 at byte {exc.start} of the {what} [MQTT-1.5.3-1]") from None
