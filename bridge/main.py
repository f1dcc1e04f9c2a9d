"""Runs the bridge on its own (``switchboard bridge``): waits for the database, then consumes for ever."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

from bridge.consumer import Bridge
from bridge.metrics import BridgeMetrics, serve_bridge_metrics
from switchboard.db import wait_for_schema
from switchboard.errors import ConfigError
from switchboard.settings import Settings


def bridge_password(settings: Settings) -> str:
    """The service account's password, which a bridge run on its own must be given."""
    if settings.bridge.password is None:
        raise ConfigError(
            "bridge.password is not set (SWITCHBOARD_BRIDGE__PASSWORD): give the bridge and the broker "
            "the same service-account password"
        )
    return settings.bridge.password.get_secret_value()


def start_metrics(settings: Settings) -> BridgeMetrics:
    """The bridge's metrics, served on bridge.metrics_port unless that is null."""
    metrics = BridgeMetrics()
    if settings.bridge.metrics_port is not None:
        serve_bridge_metrics(metrics, settings.bridge.metrics_host, settings.bridge.metrics_port)
    return metrics


async def serve(settings: Settings, engine: Engine) -> None:
    """Run until cancelled."""
    password = bridge_password(settings)
    metrics = start_metrics(settings)
    await asyncio.to_thread(wait_for_schema, engine, what="bridge")
    bridge = Bridge(
        engine=engine,
        settings=settings.bridge,
        password=password,
        host=settings.bridge.broker_host,
        port=settings.bridge.broker_port,
        metrics=metrics,
    )
    await bridge.run()
