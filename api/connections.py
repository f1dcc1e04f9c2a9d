"""The two connection guards uvicorn lacks: a deadline for a request's headers, and a cap on connections.

uvicorn's ``timeout_keep_alive`` only runs between requests and restarts on every byte received, so a client
that connects and sends nothing, or sends its headers a byte at a time, holds its socket (and a file
descriptor the broker shares in ``switchboard up``) forever; ``limit_concurrency`` answers 503 per request but
still accepts the connection. This protocol, a subclass of uvicorn's httptools protocol (h11 where httptools
is not installed) given to ``uvicorn.Config`` as ``http``, answers 408 and closes a connection whose request
headers are not complete within ``header_timeout`` seconds of connecting (or of the previous response), and
answers 503 and closes any connection beyond ``max_connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class _Guard(asyncio.Protocol):
    """The header deadline and the connection cap, over either of uvicorn's HTTP protocols (limits set on a
    subclass, see :func:`guarded_protocol`)."""

    header_timeout: float = 10.0
    max_connections: int = 2048
    header_deadline: asyncio.TimerHandle | None = None
    connections: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            if len(self.connections) == self.max_connections + 1:  # once per crossing, not once per refusal
                log.warning("api: api.max_connections (%d) reached; refusing new connections", self.max_connections)
            _answer_and_close(transport, 503, "Service Unavailable", "too many connections: try again shortly")
            return
        self._arm()

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn goes on to a pipelined request, which disarms it again
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_too_slow(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        detail = f"no complete request headers within {self.header_timeout:g} s (api.header_timeout_seconds)"
        _answer_and_close(self.transport, 408, "Request Timeout", detail)


class GuardedH11Protocol(_Guard, H11Protocol):
    """uvicorn's h11 protocol, guarded."""

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers are complete: the application has it now
            self._disarm()


def _answer_and_close(transport: asyncio.Transport, status: int, reason: str, detail: str) -> None:
    """A whole HTTP/1.1 response written straight to the socket (no request was parsed), then close."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


def guarded_protocol(header_timeout: float, max_connections: int) -> type[_Guard]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits: on httptools (a C parser,
    cheaper per request) when it is installed, else on h11."""
    base: type[_Guard] = GuardedH11Protocol
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        pass
    else:

        class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
            def on_headers_complete(self) -> None:
                super().on_headers_complete()
                self._disarm()  # a request's headers are complete: the application has it now

        base = GuardedHttpToolsProtocol

    class Guarded(base):  # type: ignore[valid-type,misc]
        pass

    Guarded.header_timeout = header_timeout
    Guarded.max_connections = max_connections
    return Guarded
