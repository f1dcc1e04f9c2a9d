"""MQTT over WebSocket (``ws``) and WebSocket over TLS (``wss``), feeding an ordinary ``asyncio.Protocol``.

The ``websockets`` library (its public ``websockets.asyncio.server`` API) does the HTTP upgrade, the
framing, TLS and its own flow control; this module turns each WebSocket into a transport-like
:class:`WebSocketTransport` so the broker's MQTT protocol runs unchanged over TCP, TLS, ws and wss.

MQTT 3.1.1 section 6 as applied here:

- [MQTT-6.0.0-1] a text data frame closes the connection (close code 1003, unsupported data);
- [MQTT-6.0.0-2] packets may span frames and frames may hold several packets: the protocol gets a
  byte stream, and everything it writes in one event-loop turn goes out as one binary frame;
- [MQTT-6.0.0-3/4] the client must offer the ``mqtt`` subprotocol and the server selects it. A client
  offering none, or only others, gets HTTP 400 saying so. (Mosquitto 2.0 completes the handshake for
  such a client but binds it to its HTTP protocol, so its CONNECT is never answered; a clear refusal
  is easier to diagnose.)

``abort()`` and a closing handshake the client does not complete within ``close_timeout`` end the TCP
connection itself: websockets 15 waits for a client that stopped reading to drain before it applies
its own close timeout, so :class:`TcpKeepingConnection` keeps the TCP transport asyncio hands to the
connection (through ``serve``'s documented ``create_connection`` hook).

Per-message compression is off (MQTT payloads are small or already compressed; deflate costs a
context per connection), websockets' own pings are off (MQTT keep-alive does that job), and one frame
may hold at most two packets of ``max_packet_bytes`` (with their 5-byte fixed headers): a packet over the
maximum but within that reaches the protocol, which refuses it as over TCP (MQTT 5: DISCONNECT 0x95); a
bigger frame is closed with 1009 "message too big".
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHeader
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("mqtt")
#: Close code for a text frame: "unsupported data" (RFC 6455 section 7.4.1).
UNSUPPORTED_DATA = 1003
#: A fixed header (type byte and up to four length bytes) on top of the largest packet body.
FIXED_HEADER_BYTES = 5
#: How many of the largest packets one received frame may hold (see the module docstring).
PACKETS_PER_FRAME = 2
#: Default write-buffer marks, as asyncio's own transports.
HIGH_WATER, LOW_WATER = 64 * 1024, 16 * 1024
#: The largest frame sent; a bigger burst of writes is cut into frames of this size.
MAX_FRAME_BYTES = 256 * 1024
#: Frames websockets reads ahead while the protocol has paused reading, before it stops reading the socket.
MAX_QUEUED_FRAMES = 4
#: How long a close handshake may take before the TCP connection is dropped.
CLOSE_TIMEOUT = 5.0
CLOSE_REASONS = {UNSUPPORTED_DATA: "MQTT needs binary frames"}
TEXT_FRAME_REFUSED = "text frame received: MQTT over WebSocket is binary frames only [MQTT-6.0.0-1]"
NOT_WEBSOCKET = "This port serves MQTT over WebSocket: connect an MQTT client to ws(s)://host:port/mqtt\n"
NO_SUBPROTOCOL = (
    "MQTT over WebSocket needs the subprotocol 'mqtt': send the header 'Sec-WebSocket-Protocol: mqtt' [MQTT-6.0.0-3]\n"
)


class WebSocketTransport(asyncio.Transport):
    """What the protocol sees of one WebSocket: writes gathered into one binary frame per loop turn,
    pause/resume of reading and writing, ``connection_lost`` exactly once."""

    def __init__(self, connection: TcpKeepingConnection, protocol: asyncio.Protocol, close_timeout: float) -> None:
        super().__init__()
        self.connection = connection
        self.tcp = connection.tcp
        self.protocol = protocol
        self.close_timeout = close_timeout
        self.pending: list[bytes] = []
        self.buffered = 0  # bytes written and not yet handed to the socket
        self.high, self.low = HIGH_WATER, LOW_WATER
        self.writing_paused = False
        self.closing = False
        self.close_code: int | None = 1000
        self.lost = False
        self.readable = asyncio.Event()
        self.readable.set()
        self.wakeup = asyncio.Event()
        self.sender = asyncio.get_running_loop().create_task(self.send_forever())

    # -- asyncio.Transport --------------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The TCP (or TLS) transport's: ``peername``, ``sockname``, ``sslcontext``, ``peercert``...;
        and ``subprotocol``, the WebSocket subprotocol selected."""
        if name == "subprotocol":
            return self.connection.subprotocol
        return self.tcp.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        self.pending.append(bytes(data))
        self.buffered += len(data)
        self.wakeup.set()
        if not self.writing_paused and self.buffered > self.high:
            self.writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Send what is written, then close the WebSocket (code 1000)."""
        self.begin_close(1000)

    def abort(self) -> None:
        """Drop what is unsent and the TCP connection now (no close frame, as asyncio's transports);
        ``connection_lost(None)`` follows in the next loop turn."""
        if self.lost:
            return
        self.drop_pending()
        self.begin_close(None)
        self.tcp.abort()
        asyncio.get_running_loop().call_soon(self.finish, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    def is_reading(self) -> bool:
        return self.readable.is_set() and not self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low, self.high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high, self.low = high, low

    # -- the WebSocket side -------------------------------------------------------------------------
    def drop_pending(self) -> None:
        self.pending.clear()
        self.buffered = 0

    def begin_close(self, code: int | None) -> None:
        """Stop taking writes; the sender then closes with ``code`` (None: abort, no close frame)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.readable.set()  # a paused reader must notice
        self.wakeup.set()

    async def send_forever(self) -> None:
        """Each round sends everything written since the last one as one binary frame (several past
        MAX_FRAME_BYTES: packets may span frames, and clients often cap a message at 1 MiB)."""
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                if self.pending:
                    data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
                    self.pending.clear()
                    for start in range(0, len(data), MAX_FRAME_BYTES):
                        await self.connection.send(data[start : start + MAX_FRAME_BYTES])
                    self.buffered = max(0, self.buffered - len(data))
                    if self.writing_paused and self.buffered <= self.low:
                        self.writing_paused = False
                        self.protocol.resume_writing()
                if self.closing and not self.pending:
                    if self.close_code is None:
                        return
                    reason = CLOSE_REASONS.get(self.close_code, "")
                    try:
                        await asyncio.wait_for(self.connection.close(self.close_code, reason), self.close_timeout)
                    except TimeoutError:
                        self.tcp.abort()  # a client that neither reads nor answers the close frame
                    return
        except ConnectionClosed:
            return

    async def receive_forever(self) -> None:
        """Feed binary frames to the protocol until the WebSocket closes; then ``connection_lost``."""
        error: Exception | None = None
        closed: asyncio.Future[None] | None = None
        try:
            while True:
                message = await self.connection.recv()
                if isinstance(message, str):
                    if not self.closing:
                        error = ConnectionError(TEXT_FRAME_REFUSED)
                        self.drop_pending()
                        self.begin_close(UNSUPPORTED_DATA)
                        # a send stuck behind a client that does not read would hold the close frame back
                        asyncio.get_running_loop().call_later(self.close_timeout, self.tcp.abort)
                    continue
                if not self.readable.is_set():
                    closed = closed or asyncio.ensure_future(self.connection.wait_closed())
                    resumed = asyncio.ensure_future(self.readable.wait())
                    await asyncio.wait((resumed, closed), return_when=asyncio.FIRST_COMPLETED)
                    resumed.cancel()
                    if closed.done():
                        break
                if self.closing:
                    continue  # closed by the protocol: no data_received after close()
                try:
                    self.protocol.data_received(message)
                except Exception as exc:  # as asyncio's transports: log, report to connection_lost, drop
                    log.error("protocol.data_received() failed; dropping the connection", exc_info=True)
                    error = exc
                    self.abort()
                    break
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            error = error or ConnectionResetError(f"WebSocket closed abnormally: {exc}")
        finally:
            if closed is not None:
                closed.cancel()
            self.closing = True
            self.wakeup.set()
            self.finish(error)
            await self.sender

    def finish(self, error: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.protocol.connection_lost(error)


class TcpKeepingConnection(ServerConnection):
    """websockets' server connection, keeping the transport asyncio gives it in ``connection_made``
    (the public ``asyncio.Protocol`` callback) so that :meth:`WebSocketTransport.abort` can drop it."""

    tcp: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.tcp = cast(asyncio.Transport, transport)


class QuietLog(logging.LoggerAdapter):
    """The logger handed to websockets: its INFO lines (one per connection, "server listening") are
    DEBUG here, and a failed opening handshake (a port probe, a plain HTTP request) is one DEBUG line
    instead of an ERROR with three chained tracebacks. Its other errors pass through unchanged.
    (websockets wraps it in adapters of its own, which all end in :meth:`log`.)"""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if msg == "opening handshake failed":
            msg, args, kwargs = "WebSocket opening handshake failed: %s", (sys.exc_info()[1],), {}
            level = logging.DEBUG
        elif level == logging.INFO:
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class WebSocketListener:
    """A listening WebSocket server. ``close()`` stops accepting (connections stay, as with
    ``asyncio.Server``); ``wait_closed()`` returns once it is closed and every connection has ended."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.port: int = next(iter(server.sockets)).getsockname()[1]

    def close(self) -> None:
        self.server.close(close_connections=False)

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


def offered_subprotocols(headers: Headers) -> list[str]:
    try:
        return [p for value in headers.get_all("Sec-WebSocket-Protocol") for p in parse_subprotocol(value)]
    except InvalidHeader:
        return []


async def serve_websocket(
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None,
    backlog: int,
    max_packet_bytes: int = 256 * 1024,
    close_timeout: float = CLOSE_TIMEOUT,
) -> WebSocketListener:
    """Listen for MQTT over WebSocket (over TLS when ``ssl`` is given); OSError when the port is taken."""

    def check_subprotocol(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":  # a browser opening the URL
            return connection.respond(HTTPStatus.UPGRADE_REQUIRED, NOT_WEBSOCKET)
        if SUBPROTOCOL not in offered_subprotocols(request.headers):
            return connection.respond(HTTPStatus.BAD_REQUEST, NO_SUBPROTOCOL)
        return None

    async def handler(connection: ServerConnection) -> None:
        protocol = protocol_factory()
        transport = WebSocketTransport(cast(TcpKeepingConnection, connection), protocol, close_timeout)
        protocol.connection_made(transport)
        await transport.receive_forever()

    server = await serve(
        handler,
        host,
        port,
        subprotocols=[SUBPROTOCOL],
        process_request=check_subprotocol,
        compression=None,
        ping_interval=None,
        close_timeout=close_timeout,
        create_connection=TcpKeepingConnection,
        max_size=PACKETS_PER_FRAME * (max_packet_bytes + FIXED_HEADER_BYTES),
        max_queue=MAX_QUEUED_FRAMES,
        server_header=None,
        logger=QuietLog(log),
        ssl=ssl,
        backlog=backlog,
        reuse_address=True,
    )
    return WebSocketListener(server)
