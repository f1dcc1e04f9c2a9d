"""PUBLISH from a client [MQTT-3.3]: decode, check, route, acknowledge after the commit.

The hot path: decoded here straight from the bytes, checked against the ACL's cache and routed without
awaiting anything when every answer is cached. When the ACL must ask the database, the handler returns
an awaitable and the connection handles this client's next packets only after it (order is kept).

- Topic names are strict UTF-8 [MQTT-1.5.3-1], without U+0000 [MQTT-1.5.3-2] or wildcards
  [MQTT-3.3.2-2]; QoS 3 is refused [MQTT-3.3.1-4]; packet identifier 0 on QoS 1/2 [MQTT-2.3.1-1].
- ``$`` topics are the broker's: a client's PUBLISH to one is dropped and logged.
- A QoS 2 message resent before PUBREL is not routed twice [MQTT-4.3.3-2].
- PUBACK/PUBREC go out only after the state file holds the message [MQTT-4.6.0-2 order kept].
- A client's own ``presence/{user}`` carries the broker's time, not the client's.
- A chat message (``dm/``, ``group/``) passes the door (broker.door) before it is routed: refused (ACL, rate,
  payload), it is delivered to no one and the sender gets a notice on ``ack/{sender}``; the PUBACK/PUBREC is
  still sent (MQTT 3.1.1 has no way to say no: the message was handled).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker.codec import PUBACK_BYTE, PUBLISH, PUBREC_BYTE, ProtocolViolation, decode_publish_head, encode_ack
from broker.door import MESSAGE_TOPICS
from broker.sessions import Session
from switchboard.acl import Action, Decision
from switchboard.payloads import Rejection, stamp_presence
from switchboard.topics import is_ephemeral

if TYPE_CHECKING:
    from broker.connection import Connection

__all__ = ["PUBLISH", "on_publish"]

log = logging.getLogger(__name__)


def on_publish(conn: Connection, flags: int, body: bytes) -> Awaitable[None] | None:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    topic, packet_id, end = decode_publish_head(body, qos, ProtocolViolation)
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:  # routing.is_valid_topic, inlined
        if "\x00" in topic:
            raise ProtocolViolation("PUBLISH topic name holds U+0000 [MQTT-1.5.3-2]")
        raise ProtocolViolation(f"PUBLISH to {topic!r}: topic names may not be empty or hold wildcards [MQTT-3.3.2-2]")
    session = conn.session
    assert session is not None and conn.principal is not None
    if qos != 2 or session.incoming_started(packet_id):  # else: a resend before PUBREL, routed already
        if topic[0] == "$":
            log.warning(
                "dropped PUBLISH from client_id=%s to %r: $ topics are the broker's",
                session.client_id,
                topic,
                extra={"topic": topic, "client_id": session.client_id},
            )
        else:
            decision = conn.ctx.access.check_kept(conn.principal, topic, Action.PUBLISH)
            if decision is None:
                return _publish_later(conn, topic, body[end:], qos, bool(flags & 0x01), packet_id)
            routing = _decided(conn, session, decision, topic, body[end:], qos, bool(flags & 0x01))
            if routing is not None:
                return _acknowledge_after(routing, conn, qos, packet_id)
    _acknowledge(conn, qos, packet_id)
    return None


def _decided(
    conn: Connection, session: Session, decision: Decision, topic: str, payload: bytes, qos: int, retain: bool
) -> Coroutine[Any, Any, int] | None:
    """Route a message the ACL decided on, a chat message once past the door (broker.door): None when routed, or
    what is left to await."""
    assert conn.principal is not None
    if topic.startswith(MESSAGE_TOPICS):
        door = conn.ctx.door
        refusal = door.check(conn.principal, topic, payload, decision)
        if refusal is not None:
            door.refuse(conn.principal, topic, payload, refusal)
            return None
    elif not decision.allowed:
        return None
    if topic.startswith(_SPECIAL):
        if topic.startswith("presence/"):
            stamped = _stamped_presence(topic, payload, session)
            if stamped is None:
                return None
            payload = stamped
        if is_ephemeral(topic):  # typing: to whoever is connected now, at QoS 0, never kept
            return conn.hub.publish_now(topic, payload, 0, False)
    return conn.hub.publish_now(topic, payload, qos, retain)


#: The topics routed otherwise than as published: a client's presence (stamped) and typing (QoS 0).
_SPECIAL = ("presence/", "typing/")


async def _publish_later(conn: Connection, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int) -> None:
    """The same, once the ACL has asked the database."""
    assert conn.session is not None and conn.principal is not None
    decision = await conn.ctx.access.check(conn.principal, topic, Action.PUBLISH)
    routing = _decided(conn, conn.session, decision, topic, payload, qos, retain)
    if routing is not None:
        await routing
    _acknowledge(conn, qos, packet_id)


async def _acknowledge_after(routing: Coroutine[Any, Any, int], conn: Connection, qos: int, packet_id: int) -> None:
    await routing
    _acknowledge(conn, qos, packet_id)


def _acknowledge(conn: Connection, qos: int, packet_id: int) -> None:
    """PUBACK/PUBREC once the message (and, for QoS 2, its packet id) is safely stored."""
    if qos == 1:
        if conn.hub.store is None:  # nothing to wait for: no callback made and run
            conn.write(bytes((PUBACK_BYTE, 2, packet_id >> 8, packet_id & 0xFF)))
        else:
            conn.hub.after_commit(lambda: conn.write(encode_ack(PUBACK_BYTE, packet_id)))
    elif qos == 2:
        conn.hub.after_commit(lambda: conn.write(encode_ack(PUBREC_BYTE, packet_id)))


def _stamped_presence(topic: str, payload: bytes, session: Session) -> bytes | None:
    """A client's own presence carries the server's time, not the client's (a chosen far-future "at"
    would freeze it online through the bridge's watermark); a presence payload that is not
    ``{"status": "online"|"offline"}`` is dropped with a log line. None: drop."""
    stamped = stamp_presence(payload, datetime.now(UTC))
    if isinstance(stamped, Rejection):
        log.warning(
            "dropped PUBLISH from client_id=%s to %r: %s",
            session.client_id,
            topic,
            stamped.reason,
            extra={"topic": topic, "client_id": session.client_id},
        )
        return None
    return stamped
