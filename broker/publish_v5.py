"""PUBLISH from an MQTT 5 client [MQTT 5.0 §3.3]: properties in, reason codes out.

The checks of ``broker.handle_publish`` (strict UTF-8 topic, no wildcards, QoS 2 resend not routed twice,
acknowledgement after the commit), plus:

- a refused message is acknowledged with a reason code instead of silently: 0x87 "not authorized" with a
  reason string for the ACL or a ``$`` topic, 0x99 "payload format invalid" for a payload marked UTF-8
  that is not [MQTT-3.3.2-?] or a presence payload the chat scheme refuses (QoS 0 has no acknowledgement);
- a chat message (``dm/``, ``group/``) passes the door (broker.door) first: refused, it is delivered to no one,
  the sender gets a notice on ``ack/{sender}`` and the PUBACK/PUBREC the door's reason code (0x87 not authorized,
  0x97 quota exceeded for the rate limit, 0x99 payload format invalid) with its reason string;
- at most ``v5.RECEIVE_MAXIMUM`` QoS 1/2 PUBLISHes unacknowledged: one more gets DISCONNECT 0x93
  [MQTT-3.3.4-7, MQTT-3.3.4-8];
- a Topic Alias sets or names the topic for this connection (``broker.topic_aliases``); a Subscription
  Identifier from a client is a protocol error [MQTT-3.3.4-6];
- user properties, response topic, correlation data, content type and payload format indicator are
  passed to v5 subscribers unchanged [MQTT-3.3.2-17, MQTT-3.3.2-18, MQTT-3.3.2-4]; a 3.1.1 subscriber
  gets the message without them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker import properties, topic_aliases, v5
from broker.codec import PUBACK_BYTE, PUBLISH, PUBREC_BYTE, Malformed, ProtocolViolation, decode_publish_head
from broker.codec_v5 import Reason, encode_ack
from broker.door import MESSAGE_TOPICS
from broker.properties import P, Properties
from broker.sessions import Session, V5Properties
from switchboard.acl import Action, Decision
from switchboard.payloads import Rejection, stamp_presence
from switchboard.topics import is_ephemeral

if TYPE_CHECKING:
    from broker.connection import Connection

log = logging.getLogger(__name__)


def on_publish(conn: Connection, flags: int, body: bytes) -> Awaitable[None] | None:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise Malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    topic, packet_id, end = decode_publish_head(body, qos, Malformed)
    props, end = properties.decode(body, end, PUBLISH)
    if props:
        topic = _check_properties(conn, props, topic)
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ProtocolViolation(f"PUBLISH to {topic!r}: topic names may not be empty or hold wildcards [MQTT-3.3.2-2]")
    payload = body[end:]
    session = conn.session
    assert session is not None and conn.principal is not None
    state = conn.v5
    assert state is not None
    if qos and not (qos == 2 and session.incoming_qos2 is not None and packet_id in session.incoming_qos2):
        v5.receive(state, qos, packet_id)
    if qos == 2 and not session.incoming_started(packet_id):  # a resend before PUBREL: routed already
        _acknowledge(conn, qos, packet_id)
        return None
    if props.get_int(P.PAYLOAD_FORMAT_INDICATOR) == 1 and not _utf8(payload):
        _refuse(conn, session, qos, packet_id, Reason.PAYLOAD_FORMAT_INVALID, "payload marked UTF-8 is not")
        return None
    if topic[0] == "$":
        _refuse(conn, session, qos, packet_id, Reason.NOT_AUTHORIZED, f"{topic}: $ topics are the broker's")
        return None
    retain = bool(flags & 0x01)
    origin = session.client_id if v5.has_no_local(session) else None
    expiry = props.get_int(P.MESSAGE_EXPIRY_INTERVAL)
    fields = v5.message_properties(properties.forwarded(props), expiry, origin, retain)
    decision = conn.ctx.access.check_kept(conn.principal, topic, Action.PUBLISH)
    if decision is None:
        return _publish_later(conn, session, topic, payload, qos, retain, packet_id, fields)
    return _decided(conn, session, decision, topic, payload, qos, retain, packet_id, fields)


def _check_properties(conn: Connection, props: Properties, topic: str) -> str:
    """The PUBLISH's topic once its Topic Alias is applied (``broker.topic_aliases``); a Subscription Identifier
    from a client is a protocol error [MQTT-3.3.4-6]."""
    state = conn.v5
    assert state is not None
    if props.subscription_ids:
        raise ProtocolViolation("PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]")
    alias = props.get_int(P.TOPIC_ALIAS)
    if alias is None:
        return topic
    try:
        return topic_aliases.resolve(state.aliases, alias, topic)
    except topic_aliases.AliasError as exc:
        state.disconnect_code = exc.code
        raise


def _decided(
    conn: Connection,
    session: Session,
    decision: Decision,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    fields: V5Properties | None,
) -> Awaitable[None] | None:
    if topic.startswith(MESSAGE_TOPICS):
        assert conn.principal is not None
        door = conn.ctx.door
        refusal = door.check(conn.principal, topic, payload, decision)
        if refusal is not None:
            door.refuse(conn.principal, topic, payload, refusal)
            _refuse(conn, session, qos, packet_id, refusal.code, refusal.reason, logged=True)
            return None
    elif not decision.allowed:
        reason = f"not allowed to publish to {topic}: {decision.reason}"
        _refuse(conn, session, qos, packet_id, Reason.NOT_AUTHORIZED, reason)
        return None
    if topic.startswith("presence/"):
        stamped = stamp_presence(payload, datetime.now(UTC))
        if isinstance(stamped, Rejection):
            _refuse(conn, session, qos, packet_id, Reason.PAYLOAD_FORMAT_INVALID, stamped.reason)
            return None
        payload = stamped
    if is_ephemeral(topic):  # typing: to whoever is connected now, at QoS 0, never kept
        routing = conn.hub.publish_now(topic, payload, 0, False, fields)
    else:
        routing = conn.hub.publish_now(topic, payload, qos, retain, fields)
    if routing is not None:
        return _acknowledge_after(routing, conn, qos, packet_id)
    _acknowledge(conn, qos, packet_id)
    return None


async def _publish_later(
    conn: Connection,
    session: Session,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    packet_id: int,
    fields: V5Properties | None,
) -> None:
    """The same, once the ACL has asked the database."""
    assert conn.principal is not None
    decision = await conn.ctx.access.check(conn.principal, topic, Action.PUBLISH)
    waiting = _decided(conn, session, decision, topic, payload, qos, retain, packet_id, fields)
    if waiting is not None:
        await waiting


async def _acknowledge_after(routing: Coroutine[Any, Any, int], conn: Connection, qos: int, packet_id: int) -> None:
    await routing
    _acknowledge(conn, qos, packet_id)


def _acknowledge(conn: Connection, qos: int, packet_id: int) -> None:
    if qos == 1:
        conn.hub.after_commit(lambda: _puback(conn, encode_ack(PUBACK_BYTE, packet_id)))
    elif qos == 2:
        conn.hub.after_commit(lambda: conn.write(encode_ack(PUBREC_BYTE, packet_id)))


def _refuse(
    conn: Connection, session: Session, qos: int, packet_id: int, code: int, reason: str, *, logged: bool = False
) -> None:
    """PUBACK/PUBREC with ``code`` and (if the client accepts them) a reason string; logged (unless ``logged``)."""
    if not logged:
        log.warning(
            "refused PUBLISH from client_id=%s: %s (reason code 0x%02X)",
            session.client_id,
            reason,
            code,
            extra={"client_id": session.client_id},
        )
    if not qos:
        return
    if qos == 2:  # a PUBREC of 0x80 or more ends the exchange: no PUBREL follows [MQTT-4.3.3-?]
        session.incoming_released(packet_id)
    state = conn.v5
    text = reason if state is not None and state.problem_info else None
    if qos == 1:
        data = encode_ack(PUBACK_BYTE, packet_id, code, text)
        conn.hub.after_commit(lambda: _puback(conn, data))
        return
    if state is not None:
        state.receiving_qos2.discard(packet_id)
    data = encode_ack(PUBREC_BYTE, packet_id, code, text)
    conn.hub.after_commit(lambda: conn.write(data))


def _puback(conn: Connection, data: bytes) -> None:
    """Send a PUBACK: one QoS 1 PUBLISH fewer counts against the broker's Receive Maximum."""
    state = conn.v5
    if state is not None and state.receiving:
        state.receiving -= 1
    conn.write(data)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
