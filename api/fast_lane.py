"""The fast lane: the two requests of a sync storm (``GET /v1/sync`` and a page of history) answered without
FastAPI's routing, dependency solving and parameter validation, when nothing about them is unusual.

A reconnecting phone sends the same two requests over and over: a bearer token its API process verified
recently, a few integer query parameters. For those, this plain ASGI middleware reads the token from the
process's token cache (api/callers.py), checks the parameters against the bounds the routes declare, and
runs the same fast read (api/reads.py) in the same read threads (api/deps.py). Anything else goes on to
FastAPI unchanged: a token not in the cache (the route looks it up in the database), HTTP Basic, a long poll
(``timeout``), a parameter that is not plain digits within its bounds (the route answers 422 as it always
did), a path the routes would not match. The routes (api/routes/sync.py, api/routes/messages.py) stay the
one documentation of these requests (the OpenAPI schema) and the answer to every case the lane passes on;
tests/test_api_reads.py checks that the lane and the routes answer alike.

In the storm's profile FastAPI's share per request (routing through the included routers, solving the
caller's three dependencies, validating the query) was about a tenth of the API's CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import reads
from api.callers import TokenCache
from api.changes import ChangeWatch
from api.deps import ReadThreads
from api.routes.messages import MAX_PAGE
from api.routes.sync import MAX_LIMIT, MAX_SINCE
from api.schemas import MAX_INT64

SYNC = "/v1/sync"
HISTORY = "/v1/conversations/{conversation}/messages"
_HISTORY_PATH = re.compile(r"/v1/conversations/([^/]+)/messages")
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class LaneRoute:
    """What ``scope["route"]`` names for a request the lane answered: its route's path template (the
    metrics middleware labels requests by it, api/metrics.py)."""

    path: str


_ROUTES = {SYNC: LaneRoute(SYNC), HISTORY: LaneRoute(HISTORY)}


def _integer(query: QueryParams, name: str, low: int, high: int, default: int | None) -> int | bool | None:
    """The parameter as the route would take it, or False when the route should judge it (not digits, out of
    bounds)."""
    text = query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text):
        return False
    value = int(text)
    return value if low <= value <= high else False


class FastLane:
    """Answers the storm's requests when they are ordinary (see the module's docstring), else calls ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = self._plan(scope)
            if answer is not None:
                await self._answer(scope, receive, send, *answer)
                return
        await self.app(scope, receive, send)

    def _plan(self, scope: Scope) -> tuple[str, Callable[..., Any], tuple[Any, ...]] | None:
        """The route template, the read and its arguments, when the lane may answer; else None."""
        path: str = scope["path"]
        history = None
        if path != SYNC:
            history = _HISTORY_PATH.fullmatch(path)
            if history is None:
                return None
        state = scope["app"].state
        watch: ChangeWatch = state.changes
        if not watch.running:  # the cache is trusted only while revocations reach it
            return None
        scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
        if scheme.lower() != "bearer" or not token:
            return None
        cache: TokenCache = state.callers
        caller = cache.get(token)
        if caller is None:
            return None
        query = QueryParams(scope["query_string"])
        engine = state.read_engine
        if history is None:
            since = query.get("since")
            limit = _integer(query, "limit", 1, MAX_LIMIT, 100)
            if "timeout" in query or limit is False or (since is not None and len(since) > MAX_SINCE):
                return None
            return SYNC, _sync_json, (engine, caller.name, since, limit)
        before = _integer(query, "before", 1, MAX_INT64, None)
        after = _integer(query, "after", 0, MAX_INT64, None)
        limit = _integer(query, "limit", 1, MAX_PAGE, 50)
        if before is False or after is False or limit is False:
            return None
        return HISTORY, reads.history_page, (engine, caller.name, history.group(1), before, after, limit)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, route: str, read: Callable[..., bytes], args: tuple[Any, ...]
    ) -> None:
        scope["route"] = _ROUTES[route]
        threads: ReadThreads = scope["app"].state.read_threads
        try:
            response = Response(await threads.run(read, *args), media_type="application/json")
        except HTTPException as exc:  # 400, 403, 404: the answer the app's handler gives the routes' own
            response = await http_exception_handler(Request(scope, receive), exc)
        await response(scope, receive, send)


def _sync_json(engine: Any, user: str, since: str | None, limit: int) -> bytes:
    return reads.dumps(reads.sync_page(engine, user, since, limit).content)
