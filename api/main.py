"""Serves the API with uvicorn inside the caller's event loop (``switchboard api`` and ``up``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from sqlalchemy import Engine

from api.app import create_app
from api.connections import guarded_protocol
from api.metrics import ApiMetrics
from api.web import WebContext
from switchboard.observability import serve_metrics
from switchboard.ports import ensure_port_free
from switchboard.settings import ApiSettings, ChatSettings, LoginSettings, MediaSettings, PresenceSettings

log = logging.getLogger(__name__)

#: How long start-up waits for the change watch's first read of the stream heads.
WATCH_READY_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: the caller owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    """A uvicorn server for the app; start it, read its port, stop it."""

    def __init__(
        self,
        settings: ApiSettings,
        engine: Engine,
        media: MediaSettings | None = None,
        login: LoginSettings | None = None,
        web: WebContext | None = None,
        presence: PresenceSettings | None = None,
        chat: ChatSettings | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = ApiMetrics() if settings.metrics_port is not None else None
        self._metrics_server: Any = None
        self._app = create_app(engine, settings, self._metrics, media, login, web, presence, chat)
        config = uvicorn.Config(
            self._app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=settings.stop_timeout_seconds,
            # X-Forwarded-For names the client only when a configured proxy sends it (uvicorn's default
            # trusts 127.0.0.1, which would let any local caller pick the address the login throttle keys).
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
            http=guarded_protocol(settings.header_timeout_seconds, settings.max_connections),
            ws="none",  # no WebSocket routes (MQTT over WebSocket is the broker's)
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Bind and begin serving (or serve ``sockets``, bound by an api.workers parent: api/workers.py);
        ConfigError when the port is taken."""
        if sockets is None:
            ensure_port_free(self._settings.host, self._settings.port, setting="api.port", env="SWITCHBOARD_API__PORT")
        if self._metrics is not None and self._settings.metrics_port is not None:
            self._metrics_server = serve_metrics(
                self._metrics.registry,
                self._settings.metrics_host,
                self._settings.metrics_port,
                service="api",
                setting="api.metrics_port",
            )
        self._task = asyncio.create_task(self._server.serve(sockets=sockets))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.02)
        # The change watch (long polls, token revocations) from the start; a database still unreachable is
        # no reason not to serve (the requests answer 503 until it is back, and the watch keeps trying).
        watch = self._app.state.changes
        watch.ensure_started()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.ready(), WATCH_READY_SECONDS)
        # Everything start-up built (modules, the app, its routes and models, the engine) stays for the process's
        # life: out of the collector's sight, so a full collection during a storm scans the requests' objects only,
        # not the whole heap (a few hundred ms with the GIL held, every request in flight waiting; issue 18).
        gc.freeze()
        log.info("api listening on http://%s:%d", self._settings.host, self.port)

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._app.state.changes.release()  # long polls answer now, rather than hold the graceful shutdown
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self._app.state.changes.stop()
        self._app.state.read_threads.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
