"""CONNECT [MQTT-3.1]: checks, authentication, taking over a client id, opening the session.

- Credentials are checked before any session is touched; a client id that belongs to another user's
  session is refused with CONNACK 0x02, so no one can resume, replace or wipe another user's session.
- A zero-length client id with clean session 0 gets CONNACK 0x02 [MQTT-3.1.3-8]; a second CONNECT on
  one connection is a violation [MQTT-3.1.0-2]; protocol level 4 (3.1.1) is served here, level 5 (MQTT 5) by
  ``broker.connect_v5``, any other gets CONNACK 0x01 [MQTT-3.1.2-2].
- A connection that takes over a client id (same user) closes the old one [MQTT-3.1.4-2]; the old client's will
  is published, its connection having closed without its DISCONNECT [MQTT-3.1.2-8] (Mosquitto 2.0.11 publishes
  none; the spec decides), an MQTT 5 client's as its Will Delay Interval says (``broker.will_delay``, MQTT 5.0
  §3.1.4). The chat's presence wills are the broker's own announcement, which a takeover does not change.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from broker import connect_v5, v5, will_delay
from broker.codec import (
    ACCEPTED,
    BAD_USERNAME_PASSWORD,
    CONNECT,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    Connect,
    ProtocolViolation,
    decode_connect,
    encode_connack,
)
from broker.codec_v5 import protocol_level
from broker.conformance import rejected_client_id
from broker.principal import Principal
from broker.routing import is_valid_topic
from broker.sessions import Will

if TYPE_CHECKING:
    from broker.connection import Connection

__all__ = ["CONNECT", "on_connect"]

log = logging.getLogger(__name__)


def on_connect(conn: Connection, flags: int, body: bytes) -> Awaitable[None]:
    """Check the CONNECT as sent; the awaitable that authenticates it and opens the session."""
    if conn.principal is not None:
        raise ProtocolViolation("a second CONNECT on one connection [MQTT-3.1.0-2]")
    conn.start_keepalive(0)  # the connect timeout is over; keep-alive starts once accepted
    if protocol_level(body) == 5:
        return connect_v5.on_connect(conn, flags, body)
    refused = rejected_client_id(body)
    if refused is not None:
        conn.write(encode_connack(False, IDENTIFIER_REJECTED))
        raise ProtocolViolation(refused)
    packet = decode_connect(body)
    if packet.protocol_name != "MQTT":
        raise ProtocolViolation(f"unknown protocol name {packet.protocol_name!r} [MQTT-3.1.2-1]")
    if packet.level != 4:
        conn.write(encode_connack(False, UNACCEPTABLE_PROTOCOL_VERSION))
        raise ProtocolViolation(f"protocol level {packet.level}: MQTT 3.1.1 (4) and 5 are served [MQTT-3.1.2-2]")
    if packet.flags & 0x01:
        raise ProtocolViolation("CONNECT reserved flag is set [MQTT-3.1.2-3]")
    if packet.password_flag and not packet.username_flag:
        conn.write(encode_connack(False, BAD_USERNAME_PASSWORD))
        raise ProtocolViolation("password without a username [MQTT-3.1.2-22]")
    client_id = packet.client_id
    if not client_id:
        if not packet.clean_session:
            conn.write(encode_connack(False, IDENTIFIER_REJECTED))
            raise ProtocolViolation("empty client id with clean_session=0 [MQTT-3.1.3-8]")
        client_id = f"auto-{uuid.uuid4().hex}"
    if packet.will_flag:
        if packet.will_qos not in (0, 1, 2) or not is_valid_topic(packet.will_topic or ""):
            raise ProtocolViolation(f"invalid will (topic {packet.will_topic!r}, qos {packet.will_qos})")
        conn.will = Will(packet.will_topic or "", packet.will_payload, packet.will_qos, packet.will_retain)
    conn.principal = Principal(
        client_id=client_id,
        username=packet.username if packet.username_flag else None,
        password=packet.password if packet.password_flag else None,
        clean_session=packet.clean_session,
        keep_alive=packet.keep_alive,
        will_flag=packet.will_flag,
        will_topic=packet.will_topic if packet.will_flag else None,
        address=conn.peer.rpartition(":")[0] or None,
    )
    return _accept(conn, conn.principal, packet)


async def _accept(conn: Connection, principal: Principal, packet: Connect) -> None:
    from broker.connection import Close, Connection  # the module that imports this one

    hub, client_id = conn.hub, principal.client_id or ""
    if not await conn.ctx.access.authenticate(principal):
        hub.stats.auth_failures += 1
        conn.write(encode_connack(False, NOT_AUTHORIZED))
        raise ProtocolViolation(f"not authorized (client_id={client_id!r}, user={principal.username!r})")
    principal.password = None  # not needed past this point; do not keep it in memory
    principal.address = None  # only the login throttle needed it (the connection keeps its peer for logs)
    if conn.close_state is not Close.OPEN:
        return
    existing = hub.sessions.get(client_id)
    if existing is not None and existing.username != principal.username:
        conn.write(encode_connack(False, IDENTIFIER_REJECTED))
        raise ProtocolViolation(f"client id {client_id!r} belongs to another user's session")
    if existing is not None and isinstance(existing.outbox, Connection) and existing.outbox is not conn:
        await existing.outbox.take_over()
        if conn.close_state is not Close.OPEN:
            return
    existing = hub.sessions.get(client_id)
    if existing is not None:  # a v5 session's expiry and delayed will (broker.v5); a 3.1.1 session never expires
        v5.session_reconnected(hub, existing, ends=packet.clean_session or existing.clean, v311=True)
    session, present = hub.open_session(client_id, principal.username, clean=packet.clean_session, principal=principal)
    conn.session = session
    will_delay.kept(hub, session, conn.will, None)  # published after a kill -9 (broker.persistence)
    conn.write(encode_connack(present, ACCEPTED))
    session.attach(conn)
    await hub.connected(session)
    conn.start_keepalive(packet.keep_alive)
    log.info(
        "client_id=%s user=%s connected from %s (clean_session=%d, keep_alive=%ds, resumed=%s)",
        client_id,
        principal.username,
        conn.peer,
        packet.clean_session,
        packet.keep_alive,
        present,
        extra={"client_id": client_id, "user": principal.username},
    )
