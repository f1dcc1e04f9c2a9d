"""PUBACK, PUBREC, PUBREL, PUBCOMP [MQTT-3.4 to 3.7], PINGREQ [MQTT-3.12] and DISCONNECT [MQTT-3.14].

Each runs synchronously: the session moves its in-flight window (``broker.sessions``) and the reply,
if any, joins this connection's writes of the current event-loop turn. An acknowledgement for an unknown
packet id is ignored. DISCONNECT ends the connection without its will [MQTT-3.14.4-3].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.close import Close
from broker.codec import (
    DISCONNECT,
    PINGREQ,
    PINGRESP_BYTES,
    PUBACK,
    PUBCOMP,
    PUBCOMP_BYTE,
    PUBREC,
    PUBREL,
    ProtocolViolation,
    decode_packet_id,
    encode_ack,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.connection import Connection


def on_puback(conn: Connection, flags: int, body: bytes) -> None:
    assert conn.session is not None
    conn.session.acknowledged(decode_packet_id(PUBACK, body), qos=1)


def on_pubrec(conn: Connection, flags: int, body: bytes) -> None:
    assert conn.session is not None
    conn.session.received(decode_packet_id(PUBREC, body))


def on_pubrel(conn: Connection, flags: int, body: bytes) -> None:
    if flags != 0b0010:
        raise ProtocolViolation(f"PUBREL with fixed-header flags {flags:04b}, not 0010 [MQTT-3.6.1-1]")
    assert conn.session is not None
    packet_id = decode_packet_id(PUBREL, body)
    conn.session.incoming_released(packet_id)
    conn.write(encode_ack(PUBCOMP_BYTE, packet_id))


def on_pubcomp(conn: Connection, flags: int, body: bytes) -> None:
    assert conn.session is not None
    conn.session.acknowledged(decode_packet_id(PUBCOMP, body), qos=2)


def on_pingreq(conn: Connection, flags: int, body: bytes) -> None:
    conn.write(PINGRESP_BYTES)


def on_disconnect(conn: Connection, flags: int, body: bytes) -> None:
    conn.fail(Close.DISCONNECT, "DISCONNECT")


HANDLERS: dict[int, Callable[[Connection, int, bytes], Awaitable[None] | None]] = {
    PUBACK: on_puback,
    PUBREC: on_pubrec,
    PUBREL: on_pubrel,
    PUBCOMP: on_pubcomp,
    PINGREQ: on_pingreq,
    DISCONNECT: on_disconnect,
}
