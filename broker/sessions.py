"""MQTT sessions: subscriptions, the offline queue and the in-flight window of one client id.

This replaces amqtt 0.12.1's outgoing message flow, which waited a fixed 5 s for PUBACK/PUBREC/PUBCOMP
and then dropped the message (upstream #401, #391), queued nothing for anonymous clients, and resent
queued messages with the retain flag set. Here:

- a QoS 1/2 message stays in flight until it is acknowledged, however long that takes, and is resent
  with DUP=1 when the session resumes [MQTT-4.4.0-1]; a QoS 2 message whose PUBREC arrived is resumed
  with PUBREL, so the flow completes exactly once;
- at most ``max_inflight`` messages are in flight; the rest wait in order in a queue bounded by
  ``max_queued`` (overflow drops the oldest, logged and counted);
- a session with clean_session=0 queues QoS 1/2 messages while its client is offline, whoever the
  client is [MQTT-3.1.2-5].

A session talks to its connection through :class:`Outbox`; it never does I/O itself.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class V5Properties:
    """The MQTT 5 part of a message: the property fields passed on to v5 subscribers unchanged
    (``broker.properties.forwarded``), when it expires (``time.monotonic()``; 0: never) [MQTT-3.3.2-5], and what
    No Local and Retain As Published need [MQTT 5.0 §3.8.3.1]."""

    fields: bytes = b""
    expires: float = 0.0
    origin: str | None = None  # the publisher's client id, when one of its subscriptions has No Local
    retain: bool = False  # the RETAIN flag as published (for Retain As Published)


@dataclass(slots=True)
class Outgoing:
    """A message on its way to one client, at the QoS it is delivered with.

    ``row`` is its id in the broker's state file while it waits (persistent sessions only); ``share`` the
    shared subscription (``$share/{group}/{filter}``) it came through, so another member can take it over;
    ``properties`` its MQTT 5 part, when its publisher gave one (``broker.v5`` sends it).
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    row: int = 0
    share: str | None = None
    properties: V5Properties | None = None


@dataclass(slots=True)
class InFlight:
    """A QoS 1/2 message sent and not yet acknowledged. ``released``: PUBREC came, PUBREL was sent."""

    packet_id: int
    message: Outgoing
    released: bool = False


@dataclass(slots=True, frozen=True)
class Will:
    """The message to publish if the client goes away without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: V5Properties | None = None  # MQTT 5 will properties passed on
    expiry: int = 0  # MQTT 5: its Message Expiry Interval, counted from when it is published (0: none)


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-session bounds."""

    max_inflight: int = 20
    max_queued: int = 10_000


class Journal(Protocol):
    """Where a persistent session records what it must not forget (broker.persistence.StateStore)."""

    def next_row(self) -> int: ...

    def queued(
        self,
        row: int,
        client_id: str,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packet_id: int | None,
        share: str | None,
        properties: V5Properties | None,
    ) -> None: ...

    def sent(self, row: int, packet_id: int) -> None: ...

    def released(self, row: int) -> None: ...

    def done(self, row: int) -> None: ...

    def incoming_added(self, client_id: str, packet_id: int) -> None: ...

    def incoming_removed(self, client_id: str, packet_id: int) -> None: ...

    def subscription_options(self, client_id: str, topic_filter: str, options: int) -> None: ...

    def subscription_identifier(self, client_id: str, topic_filter: str, identifier: int | None) -> None: ...

    def session_expiry(self, client_id: str, interval: int | None, expires_at: float | None) -> None: ...


class Outbox(Protocol):
    """What a session needs from the connection of its client."""

    def send_publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None: ...

    def send_pubrel(self, packet_id: int) -> None: ...


@dataclass(slots=True)
class Session:
    """The state the broker keeps for one client id.

    ``queue``, ``incoming_qos2`` and ``_journaled`` are made on first use (None until then): most sessions
    never need them, and empty they cost ~1.2 KB a session (a deque allocates a block of 64 slots)."""

    client_id: str
    username: str | None
    clean: bool
    limits: Limits = field(default_factory=Limits)
    subscriptions: dict[str, int] = field(default_factory=dict)
    root_wildcards: int = 0  # how many filters start with + or # (their chat deliveries are checked)
    queue: deque[Outgoing] | None = None
    inflight: dict[int, InFlight] = field(default_factory=dict)
    incoming_qos2: set[int] | None = None
    outbox: Outbox | None = None
    principal: Any = None  # who the client is, as the ACL sees it (broker.principal.Principal)
    journal: Journal | None = None  # set for persistent sessions when the broker keeps state
    dropped: int = 0
    last_packet_id: int = 0
    v5: Any = None  # MQTT 5: subscription options, session expiry and will delay timers (broker.v5.SessionV5)
    _journaled: set[int] | None = None  # rows written while queued (their packet id comes later)

    @property
    def connected(self) -> bool:
        return self.outbox is not None

    def offer(self, message: Outgoing) -> None:
        """Deliver now, queue for later, or (QoS 0 to an absent client) drop, as MQTT 3.1.1 says."""
        outbox = self.outbox
        if message.qos == 0:
            if outbox is not None:
                outbox.send_publish(message, None, dup=False)
            return
        if self.clean and outbox is None:
            return
        if self.journal is not None and not self.clean:
            message.row = self.journal.next_row()
        if outbox is None:
            if not self.clean:
                self._enqueue(message)
            return
        inflight = self.inflight
        if self.queue or len(inflight) >= self.limits.max_inflight:
            self._enqueue(message)
            return
        if message.row:
            self._send_new(message, outbox)
            return
        # _send_new without a journal, inlined: the QoS 1/2 delivery to a connected clean session
        packet_id = self.last_packet_id % 65535 + 1
        if packet_id in inflight:
            packet_id = self._next_packet_id()
        else:
            self.last_packet_id = packet_id
        inflight[packet_id] = InFlight(packet_id, message)
        outbox.send_publish(message, packet_id, dup=False)

    def _enqueue(self, message: Outgoing) -> None:
        if message.row and self.journal is not None:
            self._journal_queued(message, None)
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.limits.max_queued:
            oldest = queue.popleft()
            if oldest.row and self.journal is not None and self._journaled is not None:
                self._journaled.discard(oldest.row)
                self.journal.done(oldest.row)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "queue of client_id=%s is full (%d messages): dropped the oldest, %d dropped so far",
                    self.client_id,
                    self.limits.max_queued,
                    self.dropped,
                    extra={"client_id": self.client_id, "user": self.username},
                )
        queue.append(message)

    def _send_new(self, message: Outgoing, outbox: Outbox) -> None:
        packet_id = self._next_packet_id()
        self.inflight[packet_id] = InFlight(packet_id, message)
        if message.row and self.journal is not None:
            if self._journaled is not None and message.row in self._journaled:
                self._journaled.discard(message.row)
                self.journal.sent(message.row, packet_id)
            else:  # straight into the window: one INSERT with its packet id, no UPDATE
                self._journal_queued(message, packet_id, keep=False)
        outbox.send_publish(message, packet_id, dup=False)

    def _journal_queued(self, message: Outgoing, packet_id: int | None, *, keep: bool = True) -> None:
        assert self.journal is not None
        if keep:
            if self._journaled is None:
                self._journaled = set()
            self._journaled.add(message.row)
        self.journal.queued(
            message.row,
            self.client_id,
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            packet_id,
            message.share,
            message.properties,
        )

    def _next_packet_id(self) -> int:
        candidate = self.last_packet_id
        for _ in range(65535):
            candidate = candidate % 65535 + 1
            if candidate not in self.inflight:
                self.last_packet_id = candidate
                return candidate
        raise RuntimeError("no free packet id")  # unreachable: max_inflight is far below 65535

    def restore_queued(self, message: Outgoing) -> None:
        """A queued message read back from the state file (its row exists already)."""
        if self.queue is None:
            self.queue = deque()
        if self._journaled is None:
            self._journaled = set()
        self.queue.append(message)
        self._journaled.add(message.row)

    def pump(self) -> None:
        """Move queued messages into the window while there is room."""
        outbox = self.outbox
        if outbox is None:
            return
        while self.queue and len(self.inflight) < self.limits.max_inflight:
            self._send_new(self.queue.popleft(), outbox)

    def acknowledged(self, packet_id: int, *, qos: int) -> bool:
        """PUBACK (qos 1) or PUBCOMP (qos 2) came: the message is done. False for an unknown id."""
        flight = self.inflight.get(packet_id)
        if flight is None or flight.message.qos != qos or (qos == 2 and not flight.released):
            return False
        del self.inflight[packet_id]
        if flight.message.row and self.journal is not None:
            self.journal.done(flight.message.row)
        if self.queue:
            self.pump()
        return True

    def received(self, packet_id: int) -> bool:
        """PUBREC came for a QoS 2 message: answer PUBREL from now on."""
        flight = self.inflight.get(packet_id)
        if flight is None or flight.message.qos != 2:
            return False
        flight.released = True
        if flight.message.row and self.journal is not None:
            self.journal.released(flight.message.row)
        if self.outbox is not None:
            self.outbox.send_pubrel(packet_id)
        return True

    def attach(self, outbox: Outbox) -> None:
        """The client (re)connected: resend what is in flight, oldest first, then fill the window."""
        self.outbox = outbox
        for flight in list(self.inflight.values()):
            if flight.released:
                outbox.send_pubrel(flight.packet_id)
            else:
                outbox.send_publish(flight.message, flight.packet_id, dup=True)
        self.pump()

    def incoming_started(self, packet_id: int) -> bool:
        """A QoS 2 PUBLISH arrived; False when this packet id is already awaiting PUBREL (a resend)."""
        if self.incoming_qos2 is None:
            self.incoming_qos2 = set()
        elif packet_id in self.incoming_qos2:
            return False
        self.incoming_qos2.add(packet_id)
        if self.journal is not None and not self.clean:
            self.journal.incoming_added(self.client_id, packet_id)
        return True

    def incoming_released(self, packet_id: int) -> None:
        """PUBREL arrived: the QoS 2 exchange started by that PUBLISH is over."""
        if self.incoming_qos2 is not None and packet_id in self.incoming_qos2:
            self.incoming_qos2.discard(packet_id)
            if self.journal is not None and not self.clean:
                self.journal.incoming_removed(self.client_id, packet_id)

    def detach(self) -> None:
        """The client went away; in-flight and queued messages wait for it."""
        self.outbox = None

    def take_shared(self, movable: Callable[[Outgoing], bool]) -> list[Outgoing]:
        """Remove and return, oldest first, the messages of shared subscriptions that another member of their
        group may take over (``movable`` says which): queued ones, and QoS 1 ones in flight. A QoS 2 message
        in flight stays: MQTT 5 forbids giving it to another member [MQTT-4.8.2-4, MQTT-4.8.2-5]."""
        taken: list[Outgoing] = []
        for packet_id, flight in list(self.inflight.items()):
            message = flight.message
            if message.share is not None and message.qos == 1 and movable(message):
                del self.inflight[packet_id]
                taken.append(message)
        if self.queue is not None and any(message.share is not None for message in self.queue):
            kept: deque[Outgoing] = deque()
            for message in self.queue:
                (taken if message.share is not None and movable(message) else kept).append(message)
            self.queue = kept
        for message in taken:
            if message.row and self.journal is not None:
                if self._journaled is not None:
                    self._journaled.discard(message.row)
                self.journal.done(message.row)
        return [Outgoing(m.topic, m.payload, m.qos, m.retain, share=m.share, properties=m.properties) for m in taken]
