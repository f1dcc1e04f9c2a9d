"""MQTT 5 CONNECT and CONNACK [MQTT 5.0 §3.1, §3.2]; ``broker.handle_connect`` hands a CONNECT of protocol
level 5 here.

- A malformed CONNECT gets CONNACK 0x81, a protocol error 0x82 [MQTT-3.1.4-1, MQTT-3.2.2-8]; an
  unknown protocol name 0x84 [MQTT-3.1.2-1]; an Authentication Method (enhanced authentication, not
  supported) 0x8C; wrong credentials 0x86 (0x87 for an anonymous client where anonymity is refused); a
  client id that belongs to another user's session 0x85.
- An empty client id gets one of the broker's, returned as Assigned Client Identifier [MQTT-3.2.2-16].
- Clean Start discards a stored session [MQTT-3.1.2-4]; without it the stored one resumes [MQTT-3.1.2-5].
  The Session Expiry Interval (capped by ``mqtt.max_session_expiry_seconds``, the granted value returned
  in CONNACK [MQTT-3.2.2-?]) decides how long the session outlives the connection; 0 ends it at
  disconnect.
- Server Keep Alive: a client asking for a longer keep-alive than ``mqtt.max_keep_alive_seconds``, or for none, gets
  that in CONNACK and is held to it [MQTT-3.2.2-21, MQTT-3.2.2-22].
- CONNACK announces what the broker supports: Retain, Wildcard and Shared Subscription Available,
  Subscription Identifier Available 1, Topic Alias Maximum (``broker.topic_aliases.MAXIMUM``), Maximum Packet
  Size, Receive Maximum (``broker.v5.RECEIVE_MAXIMUM``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from broker import topic_aliases, v5, will_delay
from broker.codec import Malformed, ProtocolViolation
from broker.codec_v5 import ConnectV5, Reason, decode_connect, encode_connack
from broker.handle_v5 import HANDLERS_V5
from broker.principal import Principal
from broker.properties import P, Properties, PropertyError, forwarded
from broker.routing import is_valid_topic
from broker.sessions import V5Properties, Will

if TYPE_CHECKING:
    from broker.connection import Connection

log = logging.getLogger(__name__)


def on_connect(conn: Connection, flags: int, body: bytes) -> Awaitable[None]:
    """Check an MQTT 5 CONNECT as sent; the awaitable that authenticates it and opens the session."""
    try:
        packet = decode_connect(body)
    except PropertyError:
        conn.write(encode_connack(False, Reason.PROTOCOL_ERROR))
        raise
    except Malformed:
        conn.write(encode_connack(False, Reason.MALFORMED_PACKET))
        raise
    if packet.protocol_name != "MQTT":
        conn.write(encode_connack(False, Reason.UNSUPPORTED_PROTOCOL_VERSION))
        raise ProtocolViolation(f"unknown protocol name {packet.protocol_name!r} [MQTT-3.1.2-1]")
    _refuse_if(conn, bool(packet.flags & 0x01), Reason.MALFORMED_PACKET, "CONNECT reserved flag is set [MQTT-3.1.2-3]")
    props = packet.properties
    method = props.get_str(P.AUTHENTICATION_METHOD)
    if method is not None:
        _refuse(
            conn,
            Reason.BAD_AUTHENTICATION_METHOD,
            f"authentication method {method!r}: enhanced authentication (AUTH) is not supported; "
            "send a user name and password",
        )
    state = v5.V5State()
    receive_maximum = props.get_int(P.RECEIVE_MAXIMUM, 65_535)
    max_packet = props.get_int(P.MAXIMUM_PACKET_SIZE, state.max_packet_size)
    _refuse_if(conn, receive_maximum == 0, Reason.PROTOCOL_ERROR, "Receive Maximum 0 [MQTT 5.0 §3.1.2.11.3]")
    _refuse_if(conn, max_packet == 0, Reason.PROTOCOL_ERROR, "Maximum Packet Size 0 [MQTT 5.0 §3.1.2.11.4]")
    state.receive_maximum = receive_maximum or 65_535
    state.max_packet_size = max_packet or state.max_packet_size
    state.problem_info = props.get_int(P.REQUEST_PROBLEM_INFORMATION, 1) != 0
    state.alias_maximum_out = props.get_int(P.TOPIC_ALIAS_MAXIMUM, 0) or 0
    requested = props.get_int(P.SESSION_EXPIRY_INTERVAL, 0) or 0
    state.session_expiry = min(requested, conn.ctx.limits.max_session_expiry)
    if packet.will_flag:
        will_topic = packet.will_topic or ""
        _refuse_if(conn, packet.will_qos == 3, Reason.MALFORMED_PACKET, "will QoS 3 [MQTT-3.1.2-12]")
        _refuse_if(conn, not is_valid_topic(will_topic), Reason.TOPIC_NAME_INVALID, f"will topic {will_topic!r}")
        if packet.will_properties.get_int(P.PAYLOAD_FORMAT_INDICATOR) == 1 and not _utf8(packet.will_payload):
            _refuse(conn, Reason.PAYLOAD_FORMAT_INVALID, "the will is marked UTF-8 and is not [MQTT-3.1.2-?]")
        state.will_delay = packet.will_properties.get_int(P.WILL_DELAY_INTERVAL, 0) or 0
        fields = forwarded(packet.will_properties)
        extra = V5Properties(fields) if fields else None
        expiry = packet.will_properties.get_int(P.MESSAGE_EXPIRY_INTERVAL, 0) or 0  # counted from its publish
        conn.will = Will(will_topic, packet.will_payload, packet.will_qos, packet.will_retain, extra, expiry)
    elif packet.flags & 0x38:
        _refuse(conn, Reason.MALFORMED_PACKET, "will QoS or retain set without a will [MQTT-3.1.2-11, -13]")
    client_id, assigned = packet.client_id, None
    if not client_id:
        client_id = assigned = f"auto-{uuid.uuid4().hex}"
    conn.v5 = state
    conn.handlers = HANDLERS_V5
    conn.principal = Principal(
        client_id=client_id,
        username=packet.username if packet.username_flag else None,
        password=packet.password if packet.password_flag else None,
        clean_session=packet.clean_start and state.session_expiry == 0,
        keep_alive=packet.keep_alive,
        will_flag=packet.will_flag,
        will_topic=packet.will_topic if packet.will_flag else None,
        address=conn.peer.rpartition(":")[0] or None,
    )
    return _accept(conn, conn.principal, packet, state, assigned, requested)


async def _accept(
    conn: Connection, principal: Principal, packet: ConnectV5, state: v5.V5State, assigned: str | None, requested: int
) -> None:
    from broker.connection import Close, Connection  # the module that imports this one

    hub, client_id = conn.hub, principal.client_id or ""
    if not await conn.ctx.access.authenticate(principal):
        hub.stats.auth_failures += 1
        code = Reason.BAD_USER_NAME_OR_PASSWORD if principal.username is not None else Reason.NOT_AUTHORIZED
        _refuse(conn, code, f"not authorized (client_id={client_id!r}, user={principal.username!r})")
    principal.password = None  # not needed past this point; do not keep it in memory
    if conn.close_state is not Close.OPEN:
        return
    existing = hub.sessions.get(client_id)
    if existing is not None and existing.username != principal.username:
        _refuse(conn, Reason.CLIENT_IDENTIFIER_NOT_VALID, f"client id {client_id!r} belongs to another user's session")
    if existing is not None and isinstance(existing.outbox, Connection) and existing.outbox is not conn:
        await existing.outbox.take_over()
        if conn.close_state is not Close.OPEN:
            return
    existing = hub.sessions.get(client_id)
    ends_at_disconnect = state.session_expiry == 0
    if existing is not None:  # its expiry stops; its delayed will is cancelled, or published as Clean Start ends it
        v5.session_reconnected(hub, existing, ends=packet.clean_start or existing.clean)
    if existing is not None and (packet.clean_start or existing.clean):
        hub.discard_session(existing)  # Clean Start [MQTT-3.1.2-4]
        existing = None
    if existing is not None:  # resumed [MQTT-3.1.2-5]; it ends at this disconnect if the interval is 0 now
        session, present = hub.open_session(client_id, principal.username, clean=False, principal=principal)
        session.clean = ends_at_disconnect
    else:
        session, present = hub.open_session(
            client_id, principal.username, clean=ends_at_disconnect, principal=principal
        )
    conn.session = session
    will_delay.kept(hub, session, conn.will, state)  # published after a kill -9 (broker.persistence)
    v5.session_opened(session, state)
    v5.apply_receive_maximum(session, state)
    keep_alive = _keep_alive(conn, packet.keep_alive)
    props = _connack_properties(conn, state, assigned, requested)
    if keep_alive != packet.keep_alive:  # the client must use it [MQTT-3.2.2-21]
        props.values[P.SERVER_KEEP_ALIVE] = keep_alive
    conn.write(encode_connack(present, Reason.SUCCESS, props))
    session.attach(conn)
    await hub.connected(session)
    conn.start_keepalive(keep_alive)
    log.info(
        "client_id=%s user=%s connected from %s with MQTT 5 (clean_start=%d, session_expiry=%ds, keep_alive=%ds, "
        "resumed=%s)",
        client_id,
        principal.username,
        conn.peer,
        packet.clean_start,
        state.session_expiry,
        keep_alive,
        present,
        extra={"client_id": client_id, "user": principal.username},
    )


def _connack_properties(conn: Connection, state: v5.V5State, assigned: str | None, requested: int) -> Properties:
    """What the broker supports [MQTT 5.0 §3.2.2.3]; Maximum QoS is left out: QoS 2 is supported."""
    props = Properties(
        {
            P.RETAIN_AVAILABLE: 1,
            P.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
            P.SHARED_SUBSCRIPTION_AVAILABLE: 1,
            P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 1,
            P.TOPIC_ALIAS_MAXIMUM: topic_aliases.MAXIMUM,
            P.MAXIMUM_PACKET_SIZE: conn.ctx.limits.max_packet_bytes,
            P.RECEIVE_MAXIMUM: v5.RECEIVE_MAXIMUM,
        }
    )
    if state.session_expiry != requested:
        props.values[P.SESSION_EXPIRY_INTERVAL] = state.session_expiry
    if assigned is not None:
        props.values[P.ASSIGNED_CLIENT_IDENTIFIER] = assigned
    return props


def _keep_alive(conn: Connection, asked: int) -> int:
    """The keep-alive the broker holds the client to: at most ``mqtt.max_keep_alive_seconds``, and that for a client
    asking for none (0); sent as Server Keep Alive when it differs [MQTT 5.0 §3.2.2.3.14]."""
    cap = conn.ctx.limits.max_keep_alive
    return cap if cap and (asked == 0 or asked > cap) else asked


def _refuse_if(conn: Connection, condition: bool, code: int, reason: str) -> None:
    if condition:
        _refuse(conn, code, reason)


def _refuse(conn: Connection, code: int, reason: str) -> None:
    """CONNACK with ``code`` and a reason string, then the connection closes [MQTT-3.2.2-7]."""
    conn.write(encode_connack(False, code, Properties({P.REASON_STRING: reason})))
    raise ProtocolViolation(reason)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
