"""Builds, starts and stops Switchboard's broker.

:class:`SwitchboardBroker` owns the hub (sessions, routing, retained messages), the state file, the
listeners (``broker.listeners``) and the set of open connections (``broker.connection``); no library
class is subclassed and no library's private attribute is used. docs/broker.md lists the modules.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from sqlalchemy import Engine

from broker import sysinfo
from broker.access import AccessControl
from broker.connection import Connection, ConnectionLimits, Context
from broker.directory_watch import DirectoryWatch
from broker.door import Door
from broker.hub import Hub
from broker.listeners import Listener, close_listeners, open_listeners
from broker.persistence import StateStore
from broker.principal import Principal
from broker.sessions import Limits
from switchboard.acl import DmPolicy
from switchboard.errors import ConfigError
from switchboard.logins import LoginThrottle
from switchboard.ports import ensure_port_free
from switchboard.rules import OperatorRule, RuleAction
from switchboard.settings import ChatSettings, LoginSettings, MqttSettings

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 10.0
#: Fewer, larger collections: with thousands of connections a full collection walks every session.
GC_THRESHOLDS = (50_000, 20, 100)


class SwitchboardBroker:
    """The listeners, connections, sessions and routing of one broker process."""

    def __init__(self, *, settings: MqttSettings, access: AccessControl, engine: Engine) -> None:
        self.settings = settings
        self.access = access
        self.directory_watch = DirectoryWatch(
            engine, access, revoke=self.revoke_user, interval=settings.directory_poll_seconds
        )
        access.follow_directory(self.directory_watch.catch_up)
        self.store = StateStore(settings.state_file) if settings.state_file else None
        self.hub = Hub(
            limits=Limits(max_inflight=settings.max_inflight, max_queued=settings.max_queued_messages),
            access=access,
            presence_for=access.has_presence,
            store=self.store,
            principal_for=_principal,
            service_limits=Limits(
                max_inflight=settings.service_max_inflight, max_queued=settings.service_max_queued_messages
            ),
            is_service=access.is_service,
        )
        self._connections: set[Connection] = set()
        self._context = Context(
            hub=self.hub,
            access=access,
            limits=ConnectionLimits(
                max_packet_bytes=settings.max_packet_bytes,
                max_subscriptions=settings.max_subscriptions,
                max_connections=settings.max_connections,
                max_session_expiry=settings.max_session_expiry_seconds,
                max_keep_alive=settings.max_keep_alive_seconds,
            ),
            connections=self._connections,
            door=Door(self.hub, rate=settings.publish_rate, burst=settings.publish_burst),
        )
        self._listeners: list[Listener] = []
        self._sys_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.metrics_server: Any = None

    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def port(self) -> int:
        """The TCP port the MQTT listener is bound to (useful when configured as 0)."""
        return self.listener_port("default")

    def listener_port(self, name: str) -> int:
        """The port a listener ("default", "ws", "tls", "wss") is bound to."""
        for listener in self._listeners:
            if listener.name == name:
                return listener.port
        raise KeyError(f"no {name!r} listener")

    def addresses(self) -> list[str]:
        """What each listener serves, for the start-up lines."""
        return [f"{listener.scheme}://{self.settings.host}:{listener.port}" for listener in self._listeners]

    def _new_connection(self) -> Connection:
        return Connection(self._context)

    async def start(self) -> None:
        """Restore saved state, then open the listeners."""
        if self.store is not None:
            await self.hub.restore()
            self.store.start()
        self._listeners = await open_listeners(self.settings, self._new_connection)
        gc.collect()  # start-up's garbage first: frozen, it would never be freed
        gc.freeze()  # what start-up built lives for ever: keep it out of every later collection
        gc.set_threshold(*GC_THRESHOLDS)
        self._sys_task = asyncio.create_task(sysinfo.publish_forever(self.hub, self.settings.sys_interval))
        self._watch_task = asyncio.create_task(self.directory_watch.run())

    def revoke_user(self, user: str, reason: str, forget_sessions: bool) -> int:
        """Close the user's connections (no will); with ``forget_sessions`` also drop its persistent
        sessions and what is queued for them. Returns how many connections were closed."""
        closing = [c for c in self._connections if c.session is not None and c.session.username == user]
        for connection in closing:
            connection.revoke(reason)
        if forget_sessions:
            task = asyncio.create_task(self._forget_sessions(user, closing))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return len(closing)

    async def _forget_sessions(self, user: str, closing: list[Connection]) -> None:
        if closing:
            await asyncio.wait([asyncio.ensure_future(c.finished()) for c in closing], timeout=SHUTDOWN_SECONDS)
        for session in [s for s in self.hub.sessions.values() if s.username == user and s.outbox is None]:
            self.hub.discard_session(session)

    async def shutdown(self) -> None:
        """Stop accepting, close every connection (no wills: the clients did nothing wrong), save state."""
        for task in (self._sys_task, self._watch_task):
            if task is not None:
                task.cancel()
        await close_listeners(self._listeners)
        self.hub.stopping = True
        connections = list(self._connections)
        for connection in connections:
            connection.close_for_shutdown()
        if connections:
            await asyncio.wait([asyncio.ensure_future(c.finished()) for c in connections], timeout=SHUTDOWN_SECONDS)
        if self.store is not None:
            await self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()


def _principal(username: str | None) -> Principal:
    """The ACL identity of a session restored from the state file (its user has not logged in yet)."""
    return Principal(username=username)


async def start_broker(
    settings: MqttSettings, engine: Engine, login: LoginSettings, chat: ChatSettings | None = None
) -> SwitchboardBroker:
    """Start listening; ConfigError (one line) when a port is taken. Failed logins are throttled by
    ``login`` in the database, with the API's (switchboard/logins.py); ``chat``: the chat's rules (dm_policy)."""
    ports = (settings.port, settings.ws_port, settings.tls_port, settings.wss_port)
    for name, port in zip(("port", "ws_port", "tls_port", "wss_port"), ports, strict=True):
        if port is not None:
            ensure_port_free(settings.host, port, setting=f"mqtt.{name}", env=f"SWITCHBOARD_MQTT__{name.upper()}")
    rules = None
    if settings.acl_rules is not None:
        rules = [OperatorRule(r.permission == "allow", RuleAction(r.action), r.topic) for r in settings.acl_rules]
    access = AccessControl(
        engine,
        allow_anonymous=settings.allow_anonymous,
        rules=rules,
        throttle=LoginThrottle(engine, login),
        cache_seconds=settings.directory_cache_seconds,
        credentials_seconds=settings.credentials_cache_seconds,
        dm_policy=DmPolicy((chat or ChatSettings()).dm_policy),
    )
    broker = SwitchboardBroker(settings=settings, access=access, engine=engine)
    try:
        await broker.start()
    except ConfigError:
        if broker.store is not None:
            await broker.store.close()
        raise
    log.info("broker listening on %s", ", ".join(broker.addresses()))
    if settings.metrics_port is not None:
        from broker.metrics import broker_registry  # prometheus_client: loaded only when metrics are served
        from switchboard.observability import serve_metrics

        try:
            broker.metrics_server = serve_metrics(
                broker_registry(broker.hub, broker.connection_count),
                settings.metrics_host,
                settings.metrics_port,
                service="broker",
                setting="mqtt.metrics_port",
            )
        except ConfigError:
            await broker.shutdown()
            raise
    return broker
