"""The packet handlers of an MQTT 5 connection (``Connection.handlers`` once CONNECT was level 5), but PUBLISH
(``broker.publish_v5``) and CONNECT (``broker.connect_v5``).

- PUBACK, PUBREC, PUBREL, PUBCOMP may carry a reason code and properties [MQTT 5.0 §3.4-3.7]; a PUBREC of
  0x80 or more ends that QoS 2 exchange (no PUBREL) [MQTT-4.3.3-?]; a PUBREL for an unknown packet id
  gets PUBCOMP 0x92.
- SUBSCRIBE [MQTT 5.0 §3.8]: one reason code per filter in SUBACK: the granted QoS, 0x8F for a malformed
  filter, 0x97 past ``mqtt.max_subscriptions``, 0x87 where the ACL refuses; Retain Handling 1 sends
  retained messages only for a new subscription and 2 never [MQTT-3.3.1-10, -11]; a Subscription
  Identifier is kept with the subscriptions (``broker.subscription_ids``); No Local on a shared subscription
  is a protocol error [MQTT-3.8.3-4].
- UNSUBSCRIBE: 0x00, or 0x11 "no subscription existed", per filter [MQTT-3.11.3-?].
- DISCONNECT with 0x04 publishes the will [MQTT 5.0 §3.14.2.1]; a Session Expiry Interval in DISCONNECT
  replaces the CONNECT's, but not from 0 to more [MQTT-3.14.2-2].
- AUTH: enhanced authentication is not supported; CONNECT with an Authentication Method was already
  refused with 0x8C, so an AUTH is a protocol error [MQTT-3.15.0-?].
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker import subscription_ids, v5
from broker.codec import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP_BYTES,
    PUBACK,
    PUBCOMP,
    PUBCOMP_BYTE,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Malformed,
    ProtocolViolation,
)
from broker.codec_v5 import (
    AUTH,
    Reason,
    SubscriptionRequest,
    decode_ack,
    decode_reason,
    decode_subscribe,
    decode_unsubscribe,
    encode_ack,
    encode_suback,
    encode_unsuback,
)
from broker.properties import P
from broker.publish_v5 import on_publish
from broker.routing import filter_problem
from broker.sessions import Session
from switchboard.acl import Action, Decision
from switchboard.topics import split_shared

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker.connection import Connection

log = logging.getLogger(__name__)


def on_puback(conn: Connection, flags: int, body: bytes) -> None:
    assert conn.session is not None
    conn.session.acknowledged(decode_ack(PUBACK, body)[0], qos=1)


def on_pubrec(conn: Connection, flags: int, body: bytes) -> None:
    session = conn.session
    assert session is not None
    packet_id, reason, _props = decode_ack(PUBREC, body)
    if reason < 0x80:
        session.received(packet_id)
        return
    flight = session.inflight.get(packet_id)  # refused by the client: the exchange is over
    if flight is not None and flight.message.qos == 2:
        flight.released = True
        session.acknowledged(packet_id, qos=2)


def on_pubrel(conn: Connection, flags: int, body: bytes) -> None:
    if flags != 0b0010:
        raise Malformed(f"PUBREL with fixed-header flags {flags:04b}, not 0010 [MQTT-3.6.1-1]")
    session = conn.session
    assert session is not None
    packet_id = decode_ack(PUBREL, body)[0]
    if conn.v5 is not None:
        conn.v5.receiving_qos2.discard(packet_id)  # PUBCOMP goes out: off the broker's Receive Maximum
    if session.incoming_qos2 is not None and packet_id in session.incoming_qos2:
        session.incoming_released(packet_id)
        conn.write(encode_ack(PUBCOMP_BYTE, packet_id))
    else:
        conn.write(encode_ack(PUBCOMP_BYTE, packet_id, Reason.PACKET_IDENTIFIER_NOT_FOUND))


def on_pubcomp(conn: Connection, flags: int, body: bytes) -> None:
    assert conn.session is not None
    conn.session.acknowledged(decode_ack(PUBCOMP, body)[0], qos=2)


def on_pingreq(conn: Connection, flags: int, body: bytes) -> None:
    conn.write(PINGRESP_BYTES)


def on_second_connect(conn: Connection, flags: int, body: bytes) -> None:
    raise ProtocolViolation("a second CONNECT on one connection [MQTT-3.1.0-2]")


def on_disconnect(conn: Connection, flags: int, body: bytes) -> None:
    from broker.connection import Close  # the module that imports this one

    reason, props = decode_reason(DISCONNECT, body)
    state, session = conn.v5, conn.session
    assert state is not None and session is not None
    expiry = props.get_int(P.SESSION_EXPIRY_INTERVAL)
    if expiry is not None:
        if state.session_expiry == 0 and expiry != 0:
            raise ProtocolViolation("DISCONNECT sets a Session Expiry Interval after CONNECT's 0 [MQTT-3.14.2-2]")
        state.session_expiry = min(expiry, conn.ctx.limits.max_session_expiry)
        session.clean = state.session_expiry == 0
    if reason == Reason.DISCONNECT_WITH_WILL:
        conn.fail(Close.DISCONNECT_WITH_WILL, "DISCONNECT with will (0x04)")
    else:
        conn.fail(Close.DISCONNECT, f"DISCONNECT (0x{reason:02X})")


def on_auth(conn: Connection, flags: int, body: bytes) -> None:
    raise ProtocolViolation(
        "AUTH without an Authentication Method in CONNECT (enhanced authentication is not supported)"
    )


# SUBSCRIBE / UNSUBSCRIBE --------------------------------------------------------------------------------


def on_subscribe(conn: Connection, flags: int, body: bytes) -> Awaitable[None] | None:
    if flags != 0b0010:
        raise Malformed(f"SUBSCRIBE with fixed-header flags {flags:04b}, not 0010 [MQTT-3.8.1-1]")
    packet_id, props, requests = decode_subscribe(body)
    session, principal, state = conn.session, conn.principal, conn.v5
    assert session is not None and principal is not None and state is not None
    identifier = props.subscription_ids[0] if props.subscription_ids else None  # 0 refused by the decoder
    decisions: list[Decision | int] = []
    for request in requests:
        if request.no_local and split_shared(request.topic_filter) is not None:
            raise ProtocolViolation(f"No Local on shared subscription {request.topic_filter!r} [MQTT-3.8.3-4]")
        code = _problem(conn, session, request.topic_filter)
        if code is not None:
            decisions.append(code)
            continue
        decision = conn.ctx.access.check_now(principal, request.topic_filter, Action.SUBSCRIBE)
        if decision is None:
            return _subscribe_later(conn, session, packet_id, requests, identifier)
        decisions.append(decision)
    return _apply(conn, session, packet_id, requests, decisions, identifier)


async def _subscribe_later(
    conn: Connection, session: Session, packet_id: int, requests: list[SubscriptionRequest], identifier: int | None
) -> None:
    assert conn.principal is not None
    decisions: list[Decision | int] = []
    for request in requests:
        code = _problem(conn, session, request.topic_filter)
        if code is None:
            decisions.append(await conn.ctx.access.check(conn.principal, request.topic_filter, Action.SUBSCRIBE))
        else:
            decisions.append(code)
    waiting = _apply(conn, session, packet_id, requests, decisions, identifier)
    if waiting is not None:
        await waiting


def _problem(conn: Connection, session: Session, topic_filter: str) -> int | None:
    """The SUBACK code of a filter refused before the ACL is asked: malformed, or over the limit."""
    problem = filter_problem(topic_filter)
    if problem is not None:
        _log_refusal(session, topic_filter, problem)
        return Reason.TOPIC_FILTER_INVALID
    limit = conn.ctx.limits.max_subscriptions
    if topic_filter not in session.subscriptions and len(session.subscriptions) >= limit:
        _log_refusal(session, topic_filter, f"it has {len(session.subscriptions)}, the limit (mqtt.max_subscriptions)")
        return Reason.QUOTA_EXCEEDED
    return None


def _apply(
    conn: Connection,
    session: Session,
    packet_id: int,
    requests: list[SubscriptionRequest],
    decisions: list[Decision | int],
    identifier: int | None,
) -> Awaitable[None] | None:
    """Add the allowed subscriptions (with the SUBSCRIBE's Subscription Identifier), send the SUBACK, then the
    retained messages Retain Handling asks for."""
    codes: list[int] = []
    retained: list[tuple[str, int]] = []
    for request, decision in zip(requests, decisions, strict=True):
        topic_filter = request.topic_filter
        if isinstance(decision, Decision) and not decision.allowed:
            _log_refusal(session, topic_filter, "the ACL refuses it")
            codes.append(Reason.NOT_AUTHORIZED)
            continue
        # the limit again: an earlier filter of this packet may have reached it
        code = decision if isinstance(decision, int) else _problem(conn, session, topic_filter)
        if code is not None:
            codes.append(code)
            continue
        new = topic_filter not in session.subscriptions
        conn.hub.add_subscription(session, topic_filter, request.qos)
        v5.set_options(
            session,
            topic_filter,
            no_local=request.no_local,
            retain_as_published=request.retain_as_published,
            retain_handling=request.retain_handling,
        )
        subscription_ids.remember(session, topic_filter, identifier)
        codes.append(request.qos)
        if request.retain_handling == 0 or (request.retain_handling == 1 and new):
            retained.append((topic_filter, request.qos))
    conn.write(encode_suback(packet_id, codes))
    if any(True for topic_filter, _qos in retained for _ in conn.hub.retained.matching(topic_filter)):
        return _send_retained(conn, session, retained)
    return None


async def _send_retained(conn: Connection, session: Session, accepted: list[tuple[str, int]]) -> None:
    for topic_filter, qos in accepted:
        await conn.hub.send_retained(session, topic_filter, qos)


def _log_refusal(session: Session, topic_filter: str, why: str) -> None:
    log.warning(
        "refused subscription of client_id=%s to %r: %s",
        session.client_id,
        topic_filter,
        why,
        extra={"topic": topic_filter, "client_id": session.client_id},
    )


def on_unsubscribe(conn: Connection, flags: int, body: bytes) -> None:
    if flags != 0b0010:
        raise Malformed(f"UNSUBSCRIBE with fixed-header flags {flags:04b}, not 0010 [MQTT-3.10.1-1]")
    packet_id, _props, filters = decode_unsubscribe(body)
    session = conn.session
    assert session is not None
    codes: list[int] = []
    for topic_filter in filters:
        existed = topic_filter in session.subscriptions
        conn.hub.unsubscribe(session, topic_filter)
        v5.set_options(session, topic_filter, no_local=False, retain_as_published=False)
        subscription_ids.remember(session, topic_filter, None)
        codes.append(Reason.SUCCESS if existed else Reason.NO_SUBSCRIPTION_EXISTED)
    conn.write(encode_unsuback(packet_id, codes))


HANDLERS_V5: dict[int, Callable[[Connection, int, bytes], Awaitable[None] | None]] = {
    CONNECT: on_second_connect,
    PUBLISH: on_publish,
    PUBACK: on_puback,
    PUBREC: on_pubrec,
    PUBREL: on_pubrel,
    PUBCOMP: on_pubcomp,
    SUBSCRIBE: on_subscribe,
    UNSUBSCRIBE: on_unsubscribe,
    PINGREQ: on_pingreq,
    DISCONNECT: on_disconnect,
    AUTH: on_auth,
}
