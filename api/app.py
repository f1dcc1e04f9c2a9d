"""Builds the FastAPI application around an engine made by the caller."""

from __future__ import annotations

import logging
from typing import cast

from fastapi import FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.body_limit import BodyLimit
from api.callers import TokenCache
from api.changes import ChangeWatch
from api.console_metrics import registry_source
from api.deps import ReadThreads
from api.fast_lane import FastLane
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routes import (
    admin,
    auth,
    blocks,
    console,
    conversations,
    health,
    hooks,
    media,
    messages,
    presence,
    rabbitmq,
    receipts,
    sync,
)
from api.web import WebContext, install_cors, install_docs, install_pages
from switchboard import __version__
from switchboard.blobs import make_blob_store
from switchboard.credentials import VerifiedCredentials
from switchboard.errors import AccountError, InvalidAccount, StoreError, UnknownAccount
from switchboard.logins import LoginThrottle
from switchboard.settings import ApiSettings, ChatSettings, LoginSettings, MediaSettings, PresenceSettings

log = logging.getLogger(__name__)

#: How long a service account's HTTP Basic credentials on the broker hooks are remembered (skips argon2).
HOOK_CALLER_SECONDS = 60.0


def create_app(
    engine: Engine,
    settings: ApiSettings,
    metrics: ApiMetrics | None = None,
    media_settings: MediaSettings | None = None,
    login_settings: LoginSettings | None = None,
    web: WebContext | None = None,
    presence_settings: PresenceSettings | None = None,
    chat_settings: ChatSettings | None = None,
) -> FastAPI:
    """The API, reading and writing through ``engine``; with ``metrics``, every request is timed; files in
    the store ``media_settings`` names (the defaults when None); failed logins throttled by
    ``login_settings`` (the defaults when None); ``web``: what the web app and the console read (where the broker's
    WebSocket listeners are, the configuration, the services' metrics); ``chat_settings``: the chat's rules the broker
    hooks decide by (``chat.dm_policy``), the defaults when None."""
    app = FastAPI(
        title="Switchboard",
        version=__version__,
        summary="History, sync, presence and administration for Switchboard, chat over MQTT.",
        docs_url=None,
        redoc_url=None,
    )
    web = web or WebContext()
    app.state.effective_config = web.effective_config
    app.state.metric_sources = [*web.metric_sources, *([registry_source(metrics.registry)] if metrics else [])]
    install_docs(app)
    install_pages(app, web.app_config)
    app.state.engine = engine
    # The fast reads (api/reads.py) and the token lookups: one statement or a few, none of which needs a
    # transaction (each sees what had committed when it began, as in READ COMMITTED), so no BEGIN and ROLLBACK
    # round trips around them; on Postgres a pool of their own without a ping per checkout (api/deps.py).
    app.state.read_threads = ReadThreads(engine)
    app.state.read_engine = app.state.read_threads.engine
    app.state.settings = settings
    app.state.media_settings = media_settings or MediaSettings()
    app.state.blobs = make_blob_store(app.state.media_settings)
    app.state.login_throttle = LoginThrottle(engine, login_settings or LoginSettings())
    app.state.hook_callers = VerifiedCredentials[str](HOOK_CALLER_SECONDS)
    app.state.presence_settings = presence_settings or PresenceSettings()
    app.state.chat_settings = chat_settings or ChatSettings()
    app.state.callers = TokenCache(settings.token_cache_seconds)
    # The change watch keeps a connection for LISTEN: from the main pool, with its ping.
    watching = engine.execution_options(isolation_level="AUTOCOMMIT")
    app.state.changes = ChangeWatch(watching, settings.sync_poll_seconds, app.state.callers.forget)
    app.include_router(auth.router)
    app.include_router(hooks.router)
    app.include_router(rabbitmq.router)
    app.include_router(health.router)
    app.include_router(conversations.router)
    app.include_router(messages.router)
    app.include_router(receipts.router)
    app.include_router(presence.router)
    app.include_router(blocks.router)
    app.include_router(sync.router)
    app.include_router(admin.router)
    app.include_router(media.router)
    app.include_router(console.router)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(AccountError, _account_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(FastLane)  # innermost: timed by the metrics, behind the body limit
    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Added last, so it runs first: a body is refused before anything (authentication included) reads it.
    files = app.state.media_settings.max_bytes
    app.add_middleware(
        BodyLimit,
        default=settings.max_body_bytes,
        detail=f"the request body is larger than {settings.max_body_bytes} bytes (api.max_body_bytes): send less",
        routes={
            ("POST", "/v1/media"): (
                files + media.MULTIPART_OVERHEAD,
                f"the upload is too large: files may be at most {files} bytes (media.max_bytes)",
            )
        },
    )
    install_cors(app, settings.cors_origins)  # outermost: a preflight is answered before the body limit
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's answer, except that a 405 lists in ``Allow`` the methods of every route on the path, not
    only those of the first route it tried (RFC 9110, 15.5.6)."""
    response = await http_exception_handler(request, cast(StarletteHTTPException, exc))
    if response.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        scope = {"type": "http", "path": request.url.path, "method": request.method}
        allowed = {
            method
            for route in request.app.routes
            if isinstance(route, APIRoute) and route.matches(scope)[0] is not Match.NONE
            for method in route.methods or ()
        }
        response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


async def _account_error(_request: Request, exc: Exception) -> JSONResponse:
    """switchboard.accounts' refusals: unknown user or group 404, bad name or password 422, else 409."""
    code = status.HTTP_409_CONFLICT
    if isinstance(exc, UnknownAccount):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, InvalidAccount):
        code = status.HTTP_422_UNPROCESSABLE_ENTITY
    return JSONResponse(status_code=code, content={"detail": str(exc)})


async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "the database is unreachable; try again shortly"},
        headers={"Retry-After": "5"},
    )


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """A database failure already translated by switchboard.db: unreachable is 503, anything else 500."""
    if isinstance(exc, StoreError) and exc.retryable:
        return await _database_unavailable(request, exc)
    log.error("api: %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR, content={"detail": "the database refused the change"}
    )
