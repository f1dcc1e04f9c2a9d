"""One client's MQTT 3.1.1 connection: dispatch to the packet handlers, keep-alive, closing, back-pressure.

Any protocol violation closes this connection with a log line naming the client and the rule; nothing a
client sends can harm another client or the broker.

- Packets are handled in order, synchronously in ``data_received`` when nothing is pending (PUBLISH, the
  acknowledgements, PINGREQ on a warm ACL cache). A handler that must wait (CONNECT's password check,
  an ACL cache miss) returns an awaitable; one task then runs it and the packets that arrived meanwhile,
  in order, and ends. No task, event or timer task per idle connection: keep-alive is one timer handle.
- The first packet must be a CONNECT within ``connect_timeout`` [MQTT-3.1.0-1]; a client silent for
  1.5 x its keep-alive is disconnected and its will published [MQTT-3.1.2-24].
- A client that stops reading gets no QoS 0 messages and the clients publishing to it are paused until it
  drains (``broker.outbox``, the part of a connection a session writes through).

``Close`` (why a connection ended) lives in ``broker.close`` and is importable from here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker import handle_acks, handle_connect, handle_publish, handle_subscribe, v5, will_delay
from broker.close import Close
from broker.codec import NAMES, PUBACK, Malformed, ProtocolViolation
from broker.hub import Hub
from broker.outbox import ROUTING, SessionOutbox
from broker.principal import Principal
from broker.sessions import Session, Will

if TYPE_CHECKING:
    from broker.access import AccessControl
    from broker.door import Door

log = logging.getLogger(__name__)

#: Packets waiting behind an await before the connection stops reading from its client.
BACKLOG = 64
#: Unsent bytes at which a client counts as not reading (its transport pauses writing), and at which it
#: counts as reading again.
SLOW_CONSUMER_BYTES, DRAINED_BYTES = 1024 * 1024, 256 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection bounds from settings."""

    max_packet_bytes: int = 256 * 1024
    max_subscriptions: int = 1000
    connect_timeout: float = 10.0
    max_connections: int = 10_000
    max_session_expiry: int = 7 * 24 * 3600  # MQTT 5 session expiry interval cap, seconds
    max_keep_alive: int = 65_535  # MQTT 5: a longer (or no) keep-alive gets this as Server Keep Alive; 0: none


@dataclass(slots=True)
class Context:
    """What every connection of one broker shares."""

    hub: Hub
    access: AccessControl
    limits: ConnectionLimits
    connections: set[Connection]
    door: Door


Handler = Callable[["Connection", int, bytes], Awaitable[None] | None]
_END = (-1, 0, b"")


class Connection(SessionOutbox):
    """Serves one network connection until it closes."""

    __slots__ = (
        "_backlog_held",
        "_finished",
        "_queue",
        "_timer",
        "ctx",
        "handlers",
        "keep_alive",
        "peer",
        "principal",
        "reason",
        "will",
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(asyncio.get_running_loop(), ctx.limits.max_packet_bytes)
        self.ctx = ctx
        self.hub = ctx.hub
        self.session: Session | None = None
        self.principal: Principal | None = None
        self.will: Will | None = None
        self.keep_alive = 0
        self.peer = "unknown peer"
        self.close_state = Close.OPEN
        self.reason = Close.LOST.value
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[int, int, bytes]] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._backlog_held = False
        self.handlers = HANDLERS
        self.v5: v5.V5State | None = None  # set by an MQTT 5 CONNECT (broker.connect_v5)

    # Life cycle -----------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        info = transport.get_extra_info("peername")
        self.peer = f"{info[0]}:{info[1]}" if info else "unknown peer"
        self.last_seen = self.loop.time()
        connections = self.ctx.connections
        if len(connections) >= self.ctx.limits.max_connections:
            self.hub.stats.refused_connections += 1
            if self.hub.stats.refused_connections % 100 == 1:
                log.warning(
                    "refused a connection from %s: %d connections is the limit (mqtt.max_connections)",
                    self.peer,
                    self.ctx.limits.max_connections,
                )
            self.close_state = Close.REFUSED
            transport.abort()
            return
        connections.add(self)
        try:
            transport.set_write_buffer_limits(high=SLOW_CONSUMER_BYTES, low=DRAINED_BYTES)
        except NotImplementedError:  # a transport with limits of its own (WebSocket)
            pass
        self._timer = self.loop.call_later(self.ctx.limits.connect_timeout, self._connect_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_state is Close.REFUSED:
            return
        if self.close_state is Close.OPEN:
            self.close_state = Close.LOST
            if exc is not None:
                self.reason = f"connection lost: {exc or type(exc).__name__}"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue is not None:
            self._queue.append(_END)  # after the packets still being handled
        else:
            self._queue = deque([_END])
            _spawn(self._drain(None))

    def fail(self, close: Close, reason: str) -> None:
        """End the connection for ``reason``, sending what is queued first (a refusal's CONNACK)."""
        if self.close_state is not Close.OPEN:
            return
        self.close_state, self.reason = close, reason
        if self.v5 is not None:
            self._disconnect_v5(close, reason)
        self.close_transport(abort=False)

    def abort(self, close: Close, reason: str) -> None:
        """End the connection now, dropping unsent data."""
        if self.close_state is not Close.OPEN:
            return
        self.close_state, self.reason = close, reason
        if self.v5 is not None and self._disconnect_v5(close, reason):
            self.close_transport(abort=False)  # the DISCONNECT goes out first (bounded by FLUSH_SECONDS)
            return
        self.close_transport(abort=True)

    def _disconnect_v5(self, close: Close, reason: str) -> bool:
        """Queue the DISCONNECT a v5 client gets for ``close``, once its CONNACK went out [MQTT-3.14.0-1]."""
        assert self.v5 is not None
        data = v5.server_disconnect(self.v5, close, reason) if self.session is not None else None
        if data is not None:
            self.write(data)
        return data is not None

    def frame_error(self, reason: str) -> None:
        self.fail(Close.VIOLATION, reason)

    async def _end(self) -> None:
        self.release_publishers()
        session = self.session
        state = self.close_state
        try:
            if session is not None and session.outbox is self:
                will = state.publishes_will
                log.log(
                    logging.WARNING if will and state is not Close.LOST else logging.INFO,
                    "client_id=%s user=%s from %s disconnected: %s",
                    session.client_id,
                    session.username,
                    self.peer,
                    self.reason,
                    extra={"client_id": session.client_id, "user": session.username},
                )
                # Taken over: the connection closes without the client's DISCONNECT, so its will goes [MQTT-3.1.2-8]
                # (MQTT 5.0 §3.1.4 says so outright, as its Will Delay Interval says).
                last_will = self.will if will or state is Close.TAKEN_OVER else None
                last_will = will_delay.hold(self.hub, session, last_will, self.v5)  # its Will Delay Interval
                await self.hub.disconnected(session, will=last_will, announce=state is not Close.TAKEN_OVER)
                if self.v5 is not None:
                    v5.session_ended(self.hub, session, self.v5)
            elif session is None and state is not Close.LOST:
                log.warning("refused connection from %s: %s", self.peer, self.reason)
        finally:
            self.ctx.connections.discard(self)
            if self._finished is None:
                self._finished = self.loop.create_future()
            self._finished.set_result(None)

    async def take_over(self) -> None:
        """Another connection with this client id arrived [MQTT-3.1.4-2]: close this one; its will is published
        [MQTT-3.1.2-8], an MQTT 5 client's as its Will Delay Interval says [MQTT 5.0 §3.1.4]."""
        self.abort(Close.TAKEN_OVER, Close.TAKEN_OVER.value)
        await self.finished()

    def close_for_shutdown(self) -> None:
        """The broker is stopping: no will (the client did nothing wrong); presence still goes offline."""
        self.abort(Close.SHUTDOWN, Close.SHUTDOWN.value)

    def revoke(self, reason: str) -> None:
        """An administrator disabled or deleted the user, or reset its password: no will; presence goes offline."""
        self.abort(Close.REVOKED, reason)

    async def finished(self) -> None:
        """Wait until this connection has been cleaned up."""
        if self._finished is None:
            self._finished = self.loop.create_future()
        await asyncio.shield(self._finished)

    # Dispatch -------------------------------------------------------------------------------------

    def frame_received(self, kind: int, flags: int, body: bytes) -> bool:
        if self.close_state is not Close.OPEN:
            return False
        queue = self._queue
        if queue is not None:  # something is awaited: keep the order
            queue.append((kind, flags, body))
            if len(queue) >= BACKLOG and not self._backlog_held:
                self._backlog_held = True
                self.hold_reading()
            return True
        if kind == PUBACK and self.handlers is HANDLERS and len(body) == 2:  # the QoS 1 hot path, straight
            session = self.session
            if session is not None:
                try:
                    session.acknowledged((body[0] << 8) | body[1], qos=1)
                except Exception:
                    self._crashed()
                return self.close_state is Close.OPEN
        waiting = self._handle(kind, flags, body)
        if waiting is not None:
            self._queue = deque()
            _spawn(self._drain(waiting))
        return self.close_state is Close.OPEN

    def _handle(self, kind: int, flags: int, body: bytes) -> Awaitable[None] | None:
        """Run one packet's handler; an awaitable when it must wait. Failures close this connection only."""
        handler = self.handlers.get(kind)
        ROUTING.source = self
        try:
            if handler is None:
                raise ProtocolViolation(f"a client may not send {NAMES.get(kind, f'reserved packet type {kind}')}")
            if self.session is None and kind != handle_connect.CONNECT:
                raise ProtocolViolation("the first packet must be a CONNECT [MQTT-3.1.0-1]")
            return handler(self, flags, body)
        except ProtocolViolation as exc:
            self.fail(Close.VIOLATION, str(exc))
        except Malformed as exc:
            self.fail(Close.VIOLATION, f"malformed {NAMES.get(kind, 'packet')}: {exc}")
        except Exception:
            self._crashed()
        finally:
            ROUTING.source = None
        return None

    async def _drain(self, waiting: Awaitable[None] | None) -> None:
        """Await the pending handler, then handle what arrived meanwhile, in order, until nothing waits."""
        queue = self._queue
        assert queue is not None
        ended = False
        while True:
            if waiting is not None:
                try:
                    await waiting
                except ProtocolViolation as exc:
                    self.fail(Close.VIOLATION, str(exc))
                except TimeoutError:
                    self.fail(Close.VIOLATION, "timed out")
                except Exception:
                    self._crashed()
                waiting = None
            if not queue:
                break
            kind, flags, body = queue.popleft()
            if kind == -1:
                waiting, ended = self._end(), True
            elif self.close_state is Close.OPEN:
                waiting = self._handle(kind, flags, body)
        if not ended:
            self._queue = None
        if self._backlog_held:
            self._backlog_held = False
            self.release_reading()

    def _crashed(self) -> None:
        log.exception(
            "client_id=%s from %s: unexpected error; closing its connection",
            self.session.client_id if self.session else None,
            self.peer,
        )
        self.fail(Close.ERROR, "internal error (logged)")

    # Keep-alive -----------------------------------------------------------------------------------

    def _connect_timeout(self) -> None:
        if self.session is None:
            self.abort(Close.VIOLATION, "no CONNECT within the connect timeout [MQTT-3.1.0-1]")

    def start_keepalive(self, keep_alive: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.keep_alive = keep_alive
        if keep_alive > 0 and self.close_state is Close.OPEN:
            self._timer = self.loop.call_at(self.last_seen + keep_alive * 1.5, self._check_keepalive)

    def _check_keepalive(self) -> None:
        limit = self.keep_alive * 1.5
        now = self.loop.time()
        idle = now - self.last_seen
        if idle < limit:
            self._timer = self.loop.call_at(self.last_seen + limit, self._check_keepalive)
        elif self._read_holds:  # not read because it is held up: not its silence
            self._timer = self.loop.call_at(now + limit, self._check_keepalive)
        else:
            reason = f"silent for {idle:.1f}s, over 1.5 x keep-alive ({self.keep_alive}s) [MQTT-3.1.2-24]"
            self.abort(Close.SILENT, reason)


_RUNNING: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` in a task kept referenced until it ends (the loop holds tasks only weakly)."""
    task = asyncio.get_running_loop().create_task(work)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


HANDLERS: dict[int, Handler] = {
    handle_connect.CONNECT: handle_connect.on_connect,
    handle_publish.PUBLISH: handle_publish.on_publish,
    **handle_acks.HANDLERS,
    **handle_subscribe.HANDLERS,
}
