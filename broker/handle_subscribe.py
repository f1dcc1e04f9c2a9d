"""SUBSCRIBE and UNSUBSCRIBE [MQTT-3.8, 3.10].

- A SUBSCRIBE or UNSUBSCRIBE without a filter, with a NUL in one, with flags other than 0010 or packet
  identifier 0 closes the connection (``broker.conformance``); a requested QoS over 2 too [MQTT-3.8.3-4].
- Each filter gets its own return code: a malformed filter, one past ``mqtt.max_subscriptions`` or one
  the ACL denies gets 0x80 and the client stays connected.
- The subscription is in place before the SUBACK goes out [MQTT-3.8.4-3]; then the retained messages
  the new filter matches follow, each through the ACL's receive check [MQTT-3.3.1-6].

Decided without awaiting when the ACL's cache answers every filter; otherwise the whole packet is
decided again in an awaitable (nothing is changed before that choice is made).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker.codec import (
    SUBACK_FAILURE,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ProtocolViolation,
    decode_subscribe,
    decode_unsubscribe,
    encode_suback,
    encode_unsuback,
)
from broker.conformance import violation
from broker.routing import filter_problem
from broker.sessions import Session
from switchboard.acl import Action, Decision

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.connection import Connection

log = logging.getLogger(__name__)


def on_subscribe(conn: Connection, flags: int, body: bytes) -> Awaitable[None] | None:
    reason = violation(SUBSCRIBE, flags, body)
    if reason is not None:
        raise ProtocolViolation(reason)
    packet_id, requests = decode_subscribe(body)
    session, principal = conn.session, conn.principal
    assert session is not None and principal is not None
    decisions: list[Decision | None] = []
    for topic_filter, qos in requests:
        if qos not in (0, 1, 2):
            raise ProtocolViolation(f"SUBSCRIBE with QoS {qos} [MQTT-3.8.3-4]")
        if _refused(conn, session, topic_filter):
            decisions.append(Decision(False, "refused"))
            continue
        decision = conn.ctx.access.check_now(principal, topic_filter, Action.SUBSCRIBE)
        if decision is None:
            return _subscribe_later(conn, session, packet_id, requests)
        decisions.append(decision)
    accepted = _apply(conn, session, packet_id, requests, decisions)
    if any(True for topic_filter, _qos in accepted for _ in conn.hub.retained.matching(topic_filter)):
        return _send_retained(conn, session, accepted)
    return None


async def _subscribe_later(conn: Connection, session: Session, packet_id: int, requests: list[tuple[str, int]]) -> None:
    assert conn.principal is not None
    decisions: list[Decision | None] = []
    for topic_filter, _qos in requests:
        if _refused(conn, session, topic_filter):
            decisions.append(Decision(False, "refused"))
        else:
            decisions.append(await conn.ctx.access.check(conn.principal, topic_filter, Action.SUBSCRIBE))
    await _send_retained(conn, session, _apply(conn, session, packet_id, requests, decisions))


def _refused(conn: Connection, session: Session, topic_filter: str) -> bool:
    """A malformed filter or one over the limit: 0x80 before the ACL is asked."""
    problem = filter_problem(topic_filter)
    if problem is not None:
        log.warning(
            "refused subscription of client_id=%s to %r: %s",
            session.client_id,
            topic_filter,
            problem,
            extra={"topic": topic_filter, "client_id": session.client_id},
        )
        return True
    limit = conn.ctx.limits.max_subscriptions
    if topic_filter not in session.subscriptions and len(session.subscriptions) >= limit:
        log.warning(
            "refused subscription of client_id=%s to %r: it has %d, the limit (mqtt.max_subscriptions)",
            session.client_id,
            topic_filter,
            len(session.subscriptions),
            extra={"topic": topic_filter, "client_id": session.client_id},
        )
        return True
    return False


def _apply(
    conn: Connection,
    session: Session,
    packet_id: int,
    requests: list[tuple[str, int]],
    decisions: list[Decision | None],
) -> list[tuple[str, int]]:
    """Add the allowed subscriptions, send the SUBACK; return what was accepted."""
    codes: list[int] = []
    accepted: list[tuple[str, int]] = []
    for (topic_filter, qos), decision in zip(requests, decisions, strict=True):
        # the limit again: an earlier filter of this packet may have reached it
        if decision is not None and decision.allowed and not _refused(conn, session, topic_filter):
            conn.hub.add_subscription(session, topic_filter, qos)
            codes.append(qos)
            accepted.append((topic_filter, qos))
        else:
            codes.append(SUBACK_FAILURE)
    conn.write(encode_suback(packet_id, codes))
    return accepted


async def _send_retained(conn: Connection, session: Session, accepted: list[tuple[str, int]]) -> None:
    for topic_filter, qos in accepted:
        await conn.hub.send_retained(session, topic_filter, qos)


def on_unsubscribe(conn: Connection, flags: int, body: bytes) -> None:
    reason = violation(UNSUBSCRIBE, flags, body)
    if reason is not None:
        raise ProtocolViolation(reason)
    packet_id, filters = decode_unsubscribe(body)
    assert conn.session is not None
    for topic_filter in filters:
        conn.hub.unsubscribe(conn.session, topic_filter)
    conn.write(encode_unsuback(packet_id))


HANDLERS: dict[int, Callable[[Connection, int, bytes], Awaitable[None] | None]] = {
    SUBSCRIBE: on_subscribe,
    UNSUBSCRIBE: on_unsubscribe,
}
