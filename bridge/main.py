"""Runs the bridge on its own (``switchboard bridge``): waits for the database, then consumes for ever."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from sqlalchemy import Engine

from bridge.consumer import Bridge
from bridge.metrics import BridgeMetrics, serve_bridge_metrics
from switchboard import accounts
from switchboard.db import transact_once_more_on_conflict, wait_for_schema_or_stop
from switchboard.errors import ConfigError
from switchboard.settings import Settings

log = logging.getLogger(__name__)


def bridge_password(settings: Settings) -> str:
    """The service account's password, which a bridge run on its own must be given."""
    if settings.bridge.password is None:
        raise ConfigError(
            "bridge.password is not set (SWITCHBOARD_BRIDGE__PASSWORD): give the bridge and the broker "
            "the same service-account password"
        )
    return settings.bridge.password.get_secret_value()


def provision_account(engine: Engine, username: str, password: str) -> None:
    """Create the bridge's service account (or set its password) so it can log in to any broker that asks
    Switchboard: its own, or an external one through the API's hooks (docs/scaling.md)."""
    # A conflict means the broker created it at the same moment: the second try sees it.
    transact_once_more_on_conflict(engine, lambda session: accounts.ensure_service_account(session, username, password))


def start_metrics(settings: Settings) -> BridgeMetrics:
    """The bridge's metrics, served on bridge.metrics_port unless that is null."""
    metrics = BridgeMetrics()
    if settings.bridge.metrics_port is not None:
        serve_bridge_metrics(metrics, settings.bridge.metrics_host, settings.bridge.metrics_port)
    return metrics


async def serve(settings: Settings, engine: Engine, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish the batch in hand and disconnect (see :meth:`Bridge.stop`)."""
    password = bridge_password(settings)
    metrics = start_metrics(settings)
    if not await wait_for_schema_or_stop(engine, what="bridge", stop=stop):
        return
    await asyncio.to_thread(provision_account, engine, settings.bridge.username, password)
    # Everything made so far (modules, SQLAlchemy's metadata, settings) lives as long as the process: out of
    # the collector's sight, so its full collections, which the bridge's per-message objects trigger, scan only
    # what the bridge made since (measured: a third of the bridge's CPU per message without this).
    gc.freeze()
    bridge = Bridge(
        engine=engine,
        settings=settings.bridge,
        password=password,
        host=settings.bridge.broker_host,
        port=settings.bridge.broker_port,
        metrics=metrics,
        notify=settings.notify,
        chat=settings.chat,
    )
    await run_until(bridge, stop, settings.bridge.stop_timeout_seconds)


async def run_until(bridge: Bridge, stop: asyncio.Event, grace: float) -> None:
    """Run ``bridge`` until ``stop`` is set; then let it finish its batch, cancelling it past ``grace`` s."""
    task = asyncio.ensure_future(bridge.run())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        bridge.stop(grace)
        try:
            await asyncio.wait_for(asyncio.shield(task), grace + 5)
        except TimeoutError:
            # The database hangs rather than fails: nothing of the batch is acknowledged, the broker keeps it.
            log.error("bridge: the batch in hand did not commit within %.0fs of stopping; leaving it", grace + 5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
    await task
