"""Runs the services: all three together (``switchboard up``) or each alone, until SIGINT or SIGTERM.

This is the composition root: the only place that imports ``broker``, ``bridge`` and ``api``
together. The services themselves import only the shared ``switchboard`` package. Each command imports
only the services it runs (``switchboard broker`` does not load FastAPI or the bridge: ~19 MB resident).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from broker.server import SwitchboardBroker, start_broker
from switchboard import config_reference, logs, lookups
from switchboard.db import upgrade, wait_for_schema_or_stop
from switchboard.settings import Settings

if TYPE_CHECKING:
    from api.web import WebContext

log = logging.getLogger(__name__)

BRIDGE_READY_SECONDS = 15.0


def _say(line: str, *, warn: bool = False) -> None:
    """Lines people (and the end-to-end tests) read to know the stack is up."""
    logs.announce(line, warn=warn)


def _say_broker(broker: SwitchboardBroker) -> None:
    for address in broker.addresses():
        scheme, _, rest = address.partition("://")
        _say(f"{scheme} listening on {rest}")


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; installed first thing, so a signal during start-up is not lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _until(stop: asyncio.Event) -> None:
    await stop.wait()
    _say("stopping")


def web_config(addresses: list[str]) -> dict[str, int]:
    """What /app/config.json tells the web app: the ports of the broker's ``ws`` and ``wss`` listeners
    (read from the addresses the broker reports, so port 0 gives the port it picked)."""
    ports: dict[str, int] = {}
    for address in addresses:
        scheme, _, rest = address.partition("://")
        if scheme in ("ws", "wss"):
            ports[f"{scheme}_port"] = int(rest.rsplit(":", 1)[1])
    return ports


def _has_admin(engine: Engine) -> bool:
    with engine.connect() as connection:
        return lookups.has_enabled_admin(connection)


def _say_pages(host: str, port: int, has_admin: bool) -> None:
    """Where the web app and the console are, and, on a database with no administrator, how to make one."""
    base = f"http://{_local_address(host)}:{port}"
    _say(f"web app at {base}/app/ ; operator console at {base}/console/")
    if not has_admin:
        _say(
            "no administrator yet: make the first one with `switchboard user add NAME --role admin` "
            "(it asks for the password), then log in to the console with it",
            warn=True,
        )


def _local_address(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


async def up(settings: Settings, engine: Engine) -> None:
    """Broker, bridge and API in one process, on one database, migrated on start."""
    from api.console_metrics import registry_source
    from api.main import ApiServer
    from api.web import WebContext
    from bridge import main as bridge_main
    from bridge.consumer import Bridge
    from broker.metrics import broker_registry

    stop = _stop_on_signals()
    _say("migrating the database to the newest schema")
    await asyncio.to_thread(upgrade, engine)
    secret = settings.bridge.password
    password = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(32)
    await asyncio.to_thread(bridge_main.provision_account, engine, settings.bridge.username, password)

    has_admin = await asyncio.to_thread(_has_admin, engine)

    broker = await start_broker(settings.mqtt, engine, settings.login, settings.chat)
    bridge_metrics = bridge_main.start_metrics(settings)
    web = WebContext(
        app_config=web_config(broker.addresses()),
        effective_config=config_reference.effective(settings),
        metric_sources=[
            registry_source(broker_registry(broker.hub, broker.connection_count)),
            registry_source(bridge_metrics.registry),
        ],
    )
    if settings.api.workers > 1:
        _say("api.workers applies to `switchboard api`; `switchboard up` runs one API process", warn=True)
    api = ApiServer(settings.api, engine, settings.media, settings.login, web, settings.presence, settings.chat)
    bridge_task: asyncio.Task[None] | None = None
    try:
        await api.start()
        bridge = Bridge(
            engine=engine,
            settings=settings.bridge,
            password=password,
            addresses=[(_local_address(settings.mqtt.host), broker.port)],
            metrics=bridge_metrics,
            notify=settings.notify,
            chat=settings.chat,
            online_ttl=settings.presence.online_ttl_seconds,
        )
        bridge_task = asyncio.create_task(bridge_main.run_until(bridge, stop, settings.bridge.stop_timeout_seconds))
        bridge_task.add_done_callback(lambda _: stop.set())  # a bridge that gives up (refused) takes the stack down
        try:
            await asyncio.wait_for(bridge.connected.wait(), BRIDGE_READY_SECONDS)
        except TimeoutError:
            log.warning("the bridge has not connected to the broker yet; it keeps trying")
        _say_broker(broker)
        _say(f"api listening on http://{settings.api.host}:{api.port} (OpenAPI at /docs)")
        _say_pages(settings.api.host, api.port, has_admin)
        _say("ready; press Ctrl-C to stop")
        await _until(stop)
    finally:
        try:
            if bridge_task is not None:
                stop.set()  # the bridge commits and acknowledges its batch while the broker still runs
                with contextlib.suppress(asyncio.CancelledError):
                    await bridge_task  # raises what made the bridge give up, for the CLI to print
        finally:
            await api.stop()
            await broker.shutdown()
    _say("stopped")


async def broker_only(settings: Settings, engine: Engine) -> None:
    """The broker alone; provisions the bridge's account when ``bridge.password`` is set."""
    stop = _stop_on_signals()
    if not await wait_for_schema_or_stop(engine, what="broker", stop=stop):
        _say("stopped")
        return
    if settings.bridge.password is not None:
        from bridge import main as bridge_main

        await asyncio.to_thread(
            bridge_main.provision_account, engine, settings.bridge.username, settings.bridge.password.get_secret_value()
        )
    broker = await start_broker(settings.mqtt, engine, settings.login, settings.chat)
    _say_broker(broker)
    try:
        await _until(stop)
    finally:
        await broker.shutdown()


def api_web_context(settings: Settings) -> WebContext:
    """What the web app and the console of ``switchboard api`` read (a worker process builds its own)."""
    from api.console_metrics import http_source
    from api.web import WebContext

    ports = {"ws_port": settings.mqtt.ws_port, "wss_port": settings.mqtt.wss_port}
    sources = [
        http_source(f"http://{_local_address(section.metrics_host)}:{section.metrics_port}/metrics")
        for section in (settings.mqtt, settings.bridge)
        if section.metrics_port
    ]
    return WebContext(
        app_config={name: port for name, port in ports.items() if port},
        effective_config=config_reference.effective(settings),
        metric_sources=sources,
    )


async def api_only(settings: Settings, engine: Engine) -> None:
    """The API alone (``api.workers`` processes of it); it answers 503 while the database is unreachable."""
    from api.main import ApiServer
    from api.workers import ApiWorkers

    stop = _stop_on_signals()
    if settings.api.workers > 1:
        engine.dispose()  # each worker makes its own
        workers = ApiWorkers(settings, api_web_context)
        try:
            await workers.start()
            _say(f"api listening on http://{settings.api.host}:{workers.port} (OpenAPI at /docs)")
            _say(f"api: {settings.api.workers} worker processes")
            dead = asyncio.ensure_future(workers.until_a_worker_dies())
            await asyncio.wait([dead, asyncio.ensure_future(_until(stop))], return_when=asyncio.FIRST_COMPLETED)
            dead.cancel()
        finally:
            await workers.stop()
        return
    api = ApiServer(
        settings.api,
        engine,
        settings.media,
        settings.login,
        api_web_context(settings),
        settings.presence,
        settings.chat,
    )
    await api.start()
    _say(f"api listening on http://{settings.api.host}:{api.port} (OpenAPI at /docs)")
    try:
        await _until(stop)
    finally:
        await api.stop()


async def bridge_only(settings: Settings, engine: Engine) -> None:
    """The bridge alone; waits for the database and the broker as long as it takes."""
    from bridge import main as bridge_main

    bridge_main.bridge_password(settings)  # fail fast on a missing password
    stop = _stop_on_signals()
    announce = asyncio.ensure_future(_until(stop))
    try:
        await bridge_main.serve(settings, engine, stop)
    finally:
        announce.cancel()
    _say("stopped")
