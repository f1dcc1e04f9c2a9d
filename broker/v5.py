"""What an MQTT 5 connection keeps and does beyond 3.1.1, called from ``broker.connection`` at a few hooks.

A connection is v5 when its ``v5`` attribute holds a :class:`V5State` (set by ``broker.connect_v5``); every
hook is one attribute check, so the 3.1.1 path stays as it was.

- Outgoing PUBLISH carries the properties the publisher gave (``Outgoing.properties``); a message larger
  than the client's Maximum Packet Size is not sent and counts as delivered [MQTT-3.1.2-25].
- The broker ends a v5 connection with DISCONNECT and a reason code [MQTT 5.0 §3.14.2.1]: 0x8E session
  taken over, 0x8D keep-alive timeout, 0x98 administrative action, 0x8B server shutting down, 0x81
  malformed packet, 0x82 protocol error, 0x95 packet too large; never before a successful CONNACK
  [MQTT-3.14.0-1].
- Receive Maximum: the client's narrows the session's in-flight window while it is connected [MQTT-3.3.4-9];
  the broker's own (``RECEIVE_MAXIMUM``, announced in CONNACK) bounds the QoS 1/2 PUBLISHes a client may have
  unacknowledged: one more gets DISCONNECT 0x93 [MQTT-3.3.4-7, MQTT-3.3.4-8].
- Will delay [MQTT 5.0 §3.1.3.2.2]: ``broker.will_delay`` holds the will (the timer lives in ``SessionV5``).
- Session expiry [MQTT 5.0 §3.1.2.11]: a session with an interval is discarded once its client has been
  away that long; 0 ends it at disconnect (``Session.clean``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker import subscription_ids, topic_aliases
from broker.codec import ProtocolViolation
from broker.codec_v5 import Reason, encode_disconnect, encode_publish
from broker.properties import P, Properties, encode_fields
from broker.routing import filter_matches
from broker.sessions import Limits
from switchboard.topics import split_shared

if TYPE_CHECKING:
    from broker.connection import Close
    from broker.hub import Hub
    from broker.persistence import StoredSession
    from broker.sessions import Outgoing, Session, V5Properties, Will

#: Session Expiry Interval meaning "never expires" [MQTT 5.0 §3.1.2.11.2].
NEVER = 0xFFFFFFFF
#: The broker's Receive Maximum [MQTT 5.0 §3.2.2.3.3]: QoS 1/2 PUBLISHes a client may send before their PUBACK,
#: PUBCOMP (or a PUBREC refusing them) came back. A PUBACK waits for the state file's commit (a few ms), so a
#: client within this bound is never held up by it.
RECEIVE_MAXIMUM = 100


@dataclass(slots=True)
class V5State:
    """The MQTT 5 facts of one connection, from its CONNECT."""

    session_expiry: int = 0
    max_packet_size: int = 268_435_460  # the protocol's own limit when the client names none
    receive_maximum: int = 65_535
    problem_info: bool = True  # Request Problem Information: reason strings on acknowledgements allowed
    will_delay: int = 0
    disconnect_code: int | None = None  # set by a handler before it raises: the DISCONNECT reason to send
    base_limits: Limits | None = None  # the session's own bounds, while the client's Receive Maximum narrows them
    receiving: int = 0  # QoS 1 PUBLISHes from the client whose PUBACK has not been sent yet
    receiving_qos2: set[int] = field(default_factory=set)  # QoS 2 ones (packet ids) whose PUBCOMP has not been sent
    aliases: dict[int, str] = field(default_factory=dict)  # Topic Alias -> topic, client to broker (topic_aliases)
    alias_maximum_out: int = 0  # the client's Topic Alias Maximum: aliases the broker may send it
    aliases_out: dict[str, int] = field(default_factory=dict)  # topic -> Topic Alias, broker to client


def receive(state: V5State, qos: int, packet_id: int) -> None:
    """A new QoS 1/2 PUBLISH from the client: one more unacknowledged, or DISCONNECT 0x93 past the broker's
    Receive Maximum [MQTT-3.3.4-7, MQTT-3.3.4-8]."""
    if state.receiving + len(state.receiving_qos2) >= RECEIVE_MAXIMUM:
        state.disconnect_code = Reason.RECEIVE_MAXIMUM_EXCEEDED
        raise ProtocolViolation(
            f"receive maximum exceeded: more than {RECEIVE_MAXIMUM} QoS 1/2 PUBLISHes unacknowledged, the Receive "
            "Maximum the broker announced in CONNACK [MQTT-3.3.4-7]"
        )
    if qos == 1:
        state.receiving += 1
    else:
        state.receiving_qos2.add(packet_id)


def publish_bytes(
    state: V5State, session: Session | None, message: Outgoing, packet_id: int | None, dup: bool
) -> bytes | None:
    """The v5 PUBLISH for ``message``, its Message Expiry Interval counted down to what is left [MQTT-3.3.2-6],
    its RETAIN flag as published where the subscription asks [MQTT-3.3.1-12], the Subscription Identifiers of the
    subscriptions it came through [MQTT-3.3.4-3]; None when it has expired
    [MQTT-3.3.2-5], is over the client's Maximum Packet Size [MQTT-3.1.2-25], or is the client's own message
    and its subscriptions have No Local [MQTT-3.8.3-3]."""
    extra = message.properties
    fields, retain = b"", message.retain
    if extra is not None:
        if session is not None and (extra.origin is not None or extra.retain):
            no_local, as_published = _options(session, message.topic)
            if no_local and extra.origin == session.client_id:
                return None
            retain = retain or (as_published and extra.retain)
        fields = extra.fields
        if extra.expires:
            left = interval_left(extra.expires, time.monotonic())
            if left is None:
                return None
            fields += encode_fields(Properties({P.MESSAGE_EXPIRY_INTERVAL: left}))
    if session is not None and session.v5 is not None:
        fields += subscription_ids.fields(session, message)  # [MQTT-3.3.4-3]
    topic, alias = message.topic, None
    if state.alias_maximum_out:  # the client accepts Topic Aliases (broker.topic_aliases)
        topic, alias, alias_fields = topic_aliases.outgoing(state.aliases_out, state.alias_maximum_out, topic)
        fields += alias_fields
    data = encode_publish(
        topic,
        message.payload,
        message.qos,
        packet_id,
        dup=dup,
        retain=retain,
        fields=fields,
    )
    if len(data) > state.max_packet_size:
        return None
    if alias is not None and topic:  # the alias is set once the client gets this packet [MQTT-3.3.2-12]
        state.aliases_out[topic] = alias
    return data


def interval_left(expires: float, now: float) -> int | None:
    """The Message Expiry Interval to forward for a message that expires at ``expires`` (monotonic): the received
    interval minus the time it waited [MQTT-3.3.2-6], in whole seconds rounded down: never more than is really left
    (rounding up sent up to 1 s more: a 3600 s message that waited 2.3 s went out with 3598). None once it has
    expired [MQTT-3.3.2-5]. The one exception is its last second: it goes with 1, the least interval that still
    means "expires" (0 would read as "never" to a client that treats it as Mosquitto does)."""
    left = expires - now
    if left <= 0:
        return None
    return max(int(left), 1)


def expired(extra: V5Properties) -> bool:
    """Whether a message's Message Expiry Interval has passed (checked for 3.1.1 clients too)."""
    return bool(extra.expires) and extra.expires <= time.monotonic()


def message_properties(fields: bytes, expiry: int | None, origin: str | None, retain: bool) -> V5Properties | None:
    """What a v5 PUBLISH hands the hub: its forwarded property fields, its expiry deadline (an interval of 0 or
    none: it does not expire, as Mosquitto reads it), its publisher (for No Local) and RETAIN flag."""
    from broker.sessions import V5Properties

    if not fields and not expiry and origin is None and not retain:
        return None
    return V5Properties(fields, time.monotonic() + expiry if expiry else 0.0, origin, retain)


def skip_undeliverable(session: Session | None, packet_id: int | None) -> None:
    """A message the client cannot take, or that expired, is treated as delivered [MQTT-3.1.2-25, MQTT-3.3.2-5]:
    its in-flight slot is freed."""
    if session is None or packet_id is None:
        return
    flight = session.inflight.get(packet_id)
    if flight is not None:
        flight.released = True
        session.acknowledged(packet_id, qos=flight.message.qos)


def server_disconnect(state: V5State, close: Close, reason: str) -> bytes | None:
    """The DISCONNECT the broker sends a v5 client before closing for ``close``; None when it sends none."""
    from broker.connection import Close  # the module that imports this one

    code = {
        Close.TAKEN_OVER: Reason.SESSION_TAKEN_OVER,
        Close.SILENT: Reason.KEEP_ALIVE_TIMEOUT,
        Close.REVOKED: Reason.ADMINISTRATIVE_ACTION,
        Close.SHUTDOWN: Reason.SERVER_SHUTTING_DOWN,
        Close.ERROR: Reason.IMPLEMENTATION_SPECIFIC_ERROR,
    }.get(close)
    if close is Close.VIOLATION and state.disconnect_code is not None:
        code = Reason(state.disconnect_code)
    elif close is Close.VIOLATION:
        if "over the limit" in reason:
            code = Reason.PACKET_TOO_LARGE
        elif reason.startswith("malformed") or "Malformed" in reason:
            code = Reason.MALFORMED_PACKET
        else:
            code = Reason.PROTOCOL_ERROR
    if code is None:
        return None
    return encode_disconnect(code, reason)


def apply_receive_maximum(session: Session, state: V5State) -> None:
    """At most the client's Receive Maximum QoS 1/2 messages in flight to it [MQTT-3.3.4-9]; the rest wait in
    the session's queue as usual."""
    limits = session.limits
    if state.receive_maximum < limits.max_inflight:
        state.base_limits = limits
        session.limits = Limits(max_inflight=state.receive_maximum, max_queued=limits.max_queued)


@dataclass(slots=True)
class SessionV5:
    """The MQTT 5 state of a session: its subscriptions' No Local / Retain As Published options, and what waits
    for it while offline (its end, its delayed will)."""

    options: dict[str, int] = field(default_factory=dict)  # filter -> NO_LOCAL | RETAIN_AS_PUBLISHED
    ids: dict[str, int] = field(default_factory=dict)  # filter -> Subscription Identifier (broker.subscription_ids)
    expiry: asyncio.TimerHandle | None = None
    will: asyncio.TimerHandle | None = None
    pending_will: Will | None = None


NO_LOCAL, RETAIN_AS_PUBLISHED = 0x04, 0x08


def session_state(session: Session) -> SessionV5:
    if session.v5 is None:
        session.v5 = SessionV5()
    state: SessionV5 = session.v5
    return state


def set_options(
    session: Session, topic_filter: str, *, no_local: bool, retain_as_published: bool, retain_handling: int = 0
) -> None:
    """Record a subscription's options (a shared subscription's are not kept: No Local is refused there), in the
    state file too for a persistent session, so they hold after a restart."""
    bits = (NO_LOCAL if no_local else 0) | (RETAIN_AS_PUBLISHED if retain_as_published else 0)
    if bits and split_shared(topic_filter) is None:
        session_state(session).options[topic_filter] = bits
    elif session.v5 is not None:
        session.v5.options.pop(topic_filter, None)
    stored = bits | (retain_handling << 4)
    if stored and session.journal is not None and not session.clean and topic_filter in session.subscriptions:
        session.journal.subscription_options(session.client_id, topic_filter, stored)


def session_opened(session: Session, state: V5State) -> None:
    """Keep a persistent v5 session's expiry interval in the state file (its end is not counting yet)."""
    if session.journal is not None and not session.clean:
        session.journal.session_expiry(session.client_id, state.session_expiry, None)


def session_restored(hub: Hub, session: Session, stored: StoredSession) -> bool:
    """A v5 session read back from the state file: its subscription options and identifiers, its delayed will, and
    its end counted from when its client went away (``stored.expires_at``, wall clock), or from now when the broker
    stopped while it was connected. False: it expired while the broker was down, and is to be discarded
    [MQTT 5.0 §3.1.2.11.2] (its delayed will, due by then, is published)."""
    from broker import will_delay  # the module that imports this one

    expiry, ends = stored.expiry, stored.expires_at
    if expiry is not None and expiry != NEVER:
        left = ends - time.time() if ends is not None else expiry
        if left <= 0:
            if stored.will is not None:
                will_delay.publish(hub, stored.username, stored.will[0])
            return False
        session_state(session).expiry = asyncio.get_running_loop().call_later(left, _expire, hub, session)
    for topic_filter, bits in stored.options.items():
        kept = bits & (NO_LOCAL | RETAIN_AS_PUBLISHED)
        if kept and split_shared(topic_filter) is None:
            session_state(session).options[topic_filter] = kept
    if stored.ids:
        session_state(session).ids.update(stored.ids)
    if stored.will is not None:
        will_delay.restored(hub, session, *stored.will)
    return True


def has_no_local(session: Session) -> bool:
    state = session.v5
    return state is not None and any(bits & NO_LOCAL for bits in state.options.values())


def _options(session: Session, topic: str) -> tuple[bool, bool]:
    """For a message on ``topic``: whether every subscription of ``session`` it matches has No Local, and whether
    one has Retain As Published."""
    state = session.v5
    if state is None or not state.options:
        return False, False
    matched, no_local, as_published = False, True, False
    for topic_filter in session.subscriptions:
        if split_shared(topic_filter) is None and filter_matches(topic_filter, topic):
            bits = state.options.get(topic_filter, 0)
            matched = True
            no_local = no_local and bool(bits & NO_LOCAL)
            as_published = as_published or bool(bits & RETAIN_AS_PUBLISHED)
    return matched and no_local, as_published


def session_ended(hub: Hub, session: Session, state: V5State) -> None:
    """The client of a v5 session went away: its own bounds come back (a 3.1.1 client may resume it), and the
    session is discarded once its expiry interval has passed."""
    if state.base_limits is not None:
        session.limits, state.base_limits = state.base_limits, None
    if session.clean or state.session_expiry == NEVER or hub.sessions.get(session.client_id) is not session:
        return
    timers = session_state(session)
    timers.expiry = asyncio.get_running_loop().call_later(state.session_expiry, _expire, hub, session)
    if session.journal is not None:  # the end, as wall-clock time: it keeps counting while the broker is down
        session.journal.session_expiry(session.client_id, state.session_expiry, time.time() + state.session_expiry)


def session_reconnected(hub: Hub, session: Session, *, ends: bool, v311: bool = False) -> None:
    """A new connection for the session's client id, before it resumes (or, with ``ends``, discards) it: its expiry
    stops counting, and its delayed will is cancelled or, as the session ends, published (``broker.will_delay``).
    A 3.1.1 client (``v311``) resuming it makes it a 3.1.1 session, which never expires, in the state file too."""
    from broker import will_delay  # the module that imports this one

    timers = session.v5
    if timers is None:
        return
    if timers.expiry is not None:
        timers.expiry.cancel()
        timers.expiry = None
    will_delay.reconnected(hub, session, ends=ends)
    if v311 and not ends and session.journal is not None and not session.clean:
        session.journal.session_expiry(session.client_id, None, None)


def _expire(hub: Hub, session: Session) -> None:
    """The session's expiry interval passed: a will still delayed goes now, then the session ends."""
    from broker import will_delay  # the module that imports this one

    if session.v5 is not None:
        session.v5.expiry = None
    will_delay.publish_held(hub, session)
    if not session.connected and hub.sessions.get(session.client_id) is session:
        hub.discard_session(session)
