"""Bytes in, whole MQTT packets out; packets in, one write per event-loop turn out.

:class:`FramedProtocol` is the ``asyncio.Protocol`` under every client connection (TCP, TLS, WebSocket
through the listener's transport shim). ``data_received`` appends to a buffer and cuts it into whole
frames (fixed header + remaining length), refusing a frame over ``max_packet_bytes`` as soon as its
header is read, before its body is buffered; each frame goes to :meth:`frame_received` whole.

Writes are gathered per connection and handed to the transport once per event-loop turn (one
``writelines``), so a burst of deliveries to one client costs one send; one ``loop.call_soon`` callback a
turn flushes every connection written to in it (a fan-out to a thousand clients schedules one callback,
not a thousand).
Reading can be held for several reasons at once (a backlog of packets waiting for an await, a
subscriber this client publishes to that stopped reading): it resumes when the last is released.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from broker.codec import CONNECT, Malformed, fixed_header

log = logging.getLogger(__name__)


class FrameError(Exception):
    """The byte stream breaks MQTT's framing; the connection must close with this reason."""


class FramedProtocol(asyncio.Protocol):
    """Framing, write gathering and flow control of one connection; subclasses handle the packets."""

    __slots__ = (
        "_blocked",
        "_buffer",
        "_first",
        "_flusher",
        "_need",
        "_read_holds",
        "last_seen",
        "loop",
        "max_packet_bytes",
        "queued",
        "transport",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, max_packet_bytes: int) -> None:
        self.transport: Any = None
        self.loop = loop
        self.max_packet_bytes = max_packet_bytes
        self.write_paused = False
        self.last_seen = 0.0
        self._buffer: bytearray | None = None
        self._need = 0
        self.queued: list[bytes] = []  # the writes of this event-loop turn, flushed together
        self._read_holds = 0
        self._blocked: list[FramedProtocol] | None = None
        self._first = True
        self._flusher = _flusher(loop)

    # To implement ----------------------------------------------------------------------------------

    def frame_received(self, kind: int, flags: int, body: bytes) -> bool:
        """Handle one whole packet; False when the connection is closing (stop reading frames)."""
        raise NotImplementedError

    def frame_error(self, reason: str) -> None:
        raise NotImplementedError

    # Reading ----------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.loop.time()
        if self._buffer is None and not self._first:
            # One whole packet under 128 bytes, the usual read of a busy broker with many clients (a PUBACK, a
            # small PUBLISH): handed on without _split's loop. Anything else goes through _split.
            size = len(data)
            if size >= 2 and (length := data[1]) < 0x80 and length + 2 == size and length <= self.max_packet_bytes:
                first = data[0]
                self.frame_received(first >> 4, first & 0x0F, data[2:])
                return
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) < self._need:
                return
            data, self._buffer = bytes(self._buffer), None
        try:
            self._split(data)
        except (FrameError, Malformed) as exc:
            self._buffer = None
            self.frame_error(str(exc))

    def _split(self, data: bytes) -> None:
        position, size, limit = 0, len(data), self.max_packet_bytes
        while position < size:
            first = data[position]
            if self._first:
                if first >> 4 != CONNECT:  # refused on its first byte
                    raise FrameError("the first packet must be a CONNECT [MQTT-3.1.0-1]")
                self._first = False
            length = data[position + 1] if position + 1 < size else 0x80
            if length < 0x80:
                start = position + 2
            else:
                found = fixed_header(data, position)
                if found is None:
                    self._keep(data, position, size + 1)  # the header is cut short: any byte more
                    return
                length, header = found
                start = position + header
            if length > limit:
                raise FrameError(f"packet of {length} bytes is over the limit of {limit} (mqtt.max_packet_bytes)")
            end = start + length
            if end > size:
                self._keep(data, position, end)
                return
            if not self.frame_received(first >> 4, first & 0x0F, data[start:end]):
                return
            position = end

    def _keep(self, data: bytes, position: int, end: int) -> None:
        """Buffer an incomplete frame; parse again once ``end - position`` bytes are there."""
        self._buffer = bytearray(data[position:])
        self._need = end - position

    def hold_reading(self) -> None:
        """Stop reading from this client until every hold is released."""
        self._read_holds += 1
        if self._read_holds == 1 and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def release_reading(self) -> None:
        self._read_holds -= 1
        if self._read_holds == 0 and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # Writing ----------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in this event-loop turn goes out in one call."""
        out = self.queued
        if not out:  # the first write of this turn: _Flusher.add, inlined
            pending = self._flusher.pending
            if not pending:
                self.loop.call_soon(self._flusher.run)
            pending.append(self)
        out.append(data)

    def flush(self) -> None:
        out = self.queued
        if not out:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
        out.clear()

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: the client is not reading fast enough."""
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.release_publishers()

    # Back-pressure: the publishers of a client that stopped reading wait for it ---------------------

    def hold_publisher(self, publisher: FramedProtocol) -> None:
        """Pause reading from ``publisher`` until this connection's client drains what it was sent, goes
        away, or has held it for HOLD_SECONDS."""
        blocked = self._blocked
        if blocked is _STUCK:
            return
        if blocked is None:
            blocked = self._blocked = []
            self.loop.call_later(HOLD_SECONDS, self._stuck)
        if publisher not in blocked:
            blocked.append(publisher)
            publisher.hold_reading()

    def _stuck(self) -> None:
        if self.write_paused and self._blocked is not None and self._blocked is not _STUCK:
            self.release_publishers()
            self._blocked = _STUCK

    def release_publishers(self) -> None:
        """Read the publishers this client held up again (it drained, went away or is stuck)."""
        blocked, self._blocked = self._blocked, None
        for publisher in blocked or ():
            publisher.release_reading()

    def close_transport(self, *, abort: bool) -> None:
        """Close the connection: ``abort`` drops unsent data (a dead, silent or replaced peer); otherwise what
        is queued is sent first (a refusal's CONNACK), for at most ``FLUSH_SECONDS``."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if abort:
            self.queued.clear()
            transport.abort()
            return
        self.flush()
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(FLUSH_SECONDS, transport.abort)


FLUSH_SECONDS = 2.0
#: How long a client that stopped reading may hold up the clients publishing to it. Past that it counts as
#: stuck: its publishers are read again (its QoS 0 messages are still dropped, its QoS 1/2 queued), so a
#: client that never reads slows its publishers down for a moment but never cuts them off.
HOLD_SECONDS = 10.0
#: ``FramedProtocol._blocked`` of a client that has held its publishers for HOLD_SECONDS without draining.
_STUCK: list[FramedProtocol] = []


class _Flusher:
    """The connections of one event loop with writes queued in this turn, flushed by one callback. (It holds no
    reference to its loop: the loop is the weak key it is found by.)"""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[FramedProtocol] = []

    def add(self, protocol: FramedProtocol) -> None:
        if not self.pending:
            protocol.loop.call_soon(self.run)
        self.pending.append(protocol)

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for protocol in pending:
            try:
                protocol.flush()
            except Exception:  # one connection's failure is not the others'
                log.exception("flushing the writes of a connection failed")


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = weakref.WeakKeyDictionary()


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    found = _FLUSHERS.get(loop)
    if found is None:
        found = _FLUSHERS[loop] = _Flusher()
    return found
