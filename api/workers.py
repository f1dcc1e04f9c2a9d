"""``api.workers`` > 1: several API processes serving one port, for more than one core (``switchboard api``).

The parent binds the socket (so the port is taken, or refused, once) and starts N worker processes (spawn,
not fork: each builds its own engine, token cache and change watch) that all accept on it; the kernel
spreads connections between them. Each worker runs :class:`api.main.ApiServer` on uvloop where installed,
with its /metrics off (one port cannot serve N registries). SIGINT or SIGTERM to the parent stops the
workers gracefully (SIGTERM each, then its ``api.stop_timeout_seconds``); a worker that dies stops the rest,
so a supervisor (systemd, Docker) restarts the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from switchboard.ports import ensure_port_free
from switchboard.settings import Settings

log = logging.getLogger(__name__)

WebFactory = Callable[[Settings], Any]


class ApiWorkers:
    """Start, read the port, stop: the same surface as ApiServer, for ``settings.api.workers`` processes."""

    def __init__(self, settings: Settings, web_factory: WebFactory) -> None:
        self._settings = settings
        self._web_factory = web_factory
        self._socket: socket.socket | None = None
        self._processes: list[BaseProcess] = []
        self.port = 0

    async def start(self) -> None:
        api = self._settings.api
        ensure_port_free(api.host, api.port, setting="api.port", env="SWITCHBOARD_API__PORT")
        family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((api.host, api.port))
        sock.listen(2048)
        sock.set_inheritable(True)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        context = multiprocessing.get_context("spawn")
        ready = [context.Event() for _ in range(api.workers)]
        for number, event in enumerate(ready, start=1):
            process = context.Process(
                target=serve_worker,
                args=(self._settings, sock, event, self._web_factory),
                name=f"switchboard-api-{number}",
            )
            process.start()
            self._processes.append(process)
        for started, event in zip(self._processes, ready, strict=True):
            while not await asyncio.to_thread(event.wait, 0.5):
                if not started.is_alive():
                    raise RuntimeError(f"API worker {started.name} stopped while starting (exit {started.exitcode})")
        log.info("api: %d worker processes on port %d", len(self._processes), self.port)

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    async def until_a_worker_dies(self) -> None:
        while all(p.is_alive() for p in self._processes):  # noqa: ASYNC110 (a process exit sets no asyncio event)
            await asyncio.sleep(1.0)
        log.error("api: a worker process stopped; stopping the others")

    async def stop(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        grace = self._settings.api.stop_timeout_seconds + 5
        for process in self._processes:
            await asyncio.to_thread(process.join, grace)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5)
        if self._socket is not None:
            self._socket.close()


def serve_worker(settings: Settings, sock: socket.socket, ready: Any, web_factory: WebFactory) -> None:
    """A worker process's body: serve the inherited socket until SIGTERM or SIGINT."""
    from switchboard.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(settings, sock, ready, web_factory))


async def _serve(settings: Settings, sock: socket.socket, ready: Any, web_factory: WebFactory) -> None:
    from api.main import ApiServer
    from switchboard.db import make_engine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    engine = make_engine(settings.database_url)
    api_settings = settings.api.model_copy(update={"metrics_port": None})
    server = ApiServer(
        api_settings, engine, settings.media, settings.login, web_factory(settings), settings.presence, settings.chat
    )
    await server.start(sockets=[sock])
    ready.set()
    try:
        await stop.wait()
    finally:
        await server.stop()
        engine.dispose()
