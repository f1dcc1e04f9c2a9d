"""Request bodies over a limit are refused before they are buffered (pure ASGI, outside every route and so
before authentication).

A ``Content-Length`` over the limit is answered 413 without reading a byte; a body without one (chunked) is
counted as it arrives and cut the moment the count passes the limit. Whatever the application made of the
cut body (FastAPI's "error parsing the body", a multipart error) is replaced by the 413. Every 413, and any
answer given while the body is still arriving, closes the connection, so the rest of the body is never read.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes its limit."""


class BodyLimit:
    """Caps request bodies at ``default`` bytes, or at the limit ``routes`` gives for an exact (method, path); a
    body over it is answered 413 with ``detail`` (which should name the setting)."""

    def __init__(
        self,
        app: ASGIApp,
        default: int,
        detail: str,
        routes: Mapping[tuple[str, str], tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.default = (default, detail)
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, detail = self.routes.get((scope["method"], scope["path"]), self.default)
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(detail)(scope, receive, send)
            return
        expects_body = "transfer-encoding" in headers or (declared is not None and declared.strip("0") != "")
        await _Guard(self.app, limit, detail, expects_body=expects_body)(scope, receive, send)


class _Guard:
    """One request: counts its body as it is received and answers 413 when it passes the limit."""

    def __init__(self, app: ASGIApp, limit: int, detail: str, *, expects_body: bool) -> None:
        self.app = app
        self.limit = limit
        self.detail = detail
        self.received = 0
        self.body_done = not expects_body
        self.exceeded = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                self.body_done = not message.get("more_body", False)
                if self.received > self.limit:
                    self.exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            if self.exceeded and not self.started:
                return  # the application's answer to a cut body; the 413 replaces it
            if message["type"] == "http.response.start":
                self.started = True
                if not self.body_done:  # answered before reading it all: do not read the rest
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not self.exceeded or self.started:
                raise
        if self.exceeded and not self.started:
            await _too_large(self.detail)(scope, receive, send)


def _too_large(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=413,
        headers={"Connection": "close"},
    )
