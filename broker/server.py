"""Builds, starts and stops Switchboard's broker.

amqtt's ``Broker`` still provides the listeners (TCP, WebSocket), the packet codec and the plugin
manager; :class:`SwitchboardBroker` takes over each connection from the listener and hands it to
``broker.connection`` and ``broker.hub`` instead of amqtt's handler, sessions and broadcast loop.
docs/broker.md lists every difference.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from functools import partial
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerType
from amqtt.errors import BrokerError
from sqlalchemy import Engine

from broker import sysinfo
from broker.access import AccessControl
from broker.connection import Connection, ConnectionLimits
from broker.directory_watch import DirectoryWatch
from broker.hub import Hub
from broker.metrics import broker_registry
from broker.persistence import StateStore
from broker.principal import Principal
from broker.sessions import Limits, Session
from switchboard.acl import Action
from switchboard.errors import ConfigError
from switchboard.logins import LoginThrottle
from switchboard.observability import serve_metrics
from switchboard.ports import ensure_port_free
from switchboard.rules import OperatorRule, RuleAction
from switchboard.settings import LoginSettings, MqttSettings

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 10.0
LISTEN_BACKLOG = 4096
#: Fewer, larger collections: with thousands of connections a full collection walks every session.
GC_THRESHOLDS = (50_000, 20, 100)


class Gate:
    """Authentication through amqtt's plugin manager (broker/plugins/auth.py); topic checks straight to
    :class:`AccessControl`, since amqtt's plugin manager makes a task per plugin per call and topic checks
    run for every message."""

    def __init__(self, broker: Broker, access: AccessControl) -> None:
        self._plugins = broker.plugins_manager
        self._access = access

    async def authenticate(self, principal: Principal) -> bool:
        results = [r for r in (await self._plugins.map_plugin_auth(session=principal)).values() if r is not None]
        return bool(results) and all(results)

    async def may(self, principal: Principal, topic: str, action: Action) -> bool:
        return (await self._access.check(principal, topic, action)).allowed


class HubAccess:
    """The hub's receive checks, answered by the same plugins."""

    def __init__(self, gate: Gate, access: AccessControl) -> None:
        self._gate = gate
        self._access = access

    def receive_needs_check(self, topic: str, *, root_wildcard: bool) -> bool:
        return self._access.receive_needs_check(topic, root_wildcard=root_wildcard)

    async def may_receive(self, session: Session, topic: str) -> bool:
        return await self._gate.may(session.principal, topic, Action.RECEIVE)


class SwitchboardBroker(Broker):
    """amqtt's listeners and plugins, Switchboard's connections, sessions and routing."""

    def __init__(
        self, config: dict[str, Any], *, settings: MqttSettings, access: AccessControl, engine: Engine
    ) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self.settings = settings
        self.gate = Gate(self, access)
        self.directory_watch = DirectoryWatch(
            engine, access, revoke=self.revoke_user, interval=settings.directory_poll_seconds
        )
        self.store = StateStore(settings.state_file) if settings.state_file else None
        self.hub = Hub(
            limits=Limits(max_inflight=settings.max_inflight, max_queued=settings.max_queued_messages),
            access=HubAccess(self.gate, access),
            presence_for=access.has_presence,
            store=self.store,
            principal_for=_principal,
            service_limits=Limits(
                max_inflight=settings.service_max_inflight, max_queued=settings.service_max_queued_messages
            ),
            is_service=access.is_service,
        )
        self._connection_limits = ConnectionLimits(
            max_packet_bytes=settings.max_packet_bytes, max_subscriptions=settings.max_subscriptions
        )
        self._connections: set[Connection] = set()
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
        """The port a listener ("default", "ws", "tls") is bound to."""
        server: Any = self._servers[name].instance
        return int(next(iter(server.sockets)).getsockname()[1])

    def addresses(self) -> list[str]:
        """What each listener serves, for the start-up lines."""
        schemes = {"default": "mqtt", "ws": "ws", "tls": "mqtts"}
        return [f"{schemes[name]}://{self.settings.host}:{self.listener_port(name)}" for name in self._servers]

    async def _create_server_instance(
        self, listener_name: str, listener_type: ListenerType, address: str | None, port: int, ssl_context: Any
    ) -> Any:
        """Override: a listen backlog of LISTEN_BACKLOG instead of asyncio's 100, so a reconnect storm of
        thousands of clients is queued by the kernel instead of dropped into SYN retries."""
        if listener_type is not ListenerType.TCP:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        return await asyncio.start_server(
            partial(self.stream_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
            ssl=ssl_context,
            backlog=LISTEN_BACKLOG,
        )

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        if len(self._connections) >= self.settings.max_connections:
            self.hub.stats.refused_connections += 1
            if self.hub.stats.refused_connections % 100 == 1:
                log.warning(
                    "refused a connection from %s: %d connections is the limit (mqtt.max_connections)",
                    writer.get_peer_info(),
                    self.settings.max_connections,
                )
            await writer.close()
            return
        connection = Connection(
            hub=self.hub, gate=self.gate, reader=reader, writer=writer, limits=self._connection_limits
        )
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    async def start(self) -> None:
        """Restore saved state, then open the listeners."""
        if self.store is not None:
            await self.hub.restore()
            self.store.start()
        await super().start()
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
        for server in self._servers.values():
            server.instance.close()
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
        await super().shutdown()


def _principal(username: str | None) -> Principal:
    """The ACL identity of a session restored from the state file (its user has not logged in yet)."""
    principal = Principal()
    principal.username = username
    return principal


def broker_config(settings: MqttSettings, access: AccessControl) -> dict[str, Any]:
    """amqtt's configuration: TCP, WebSocket and TLS listeners as configured, our plugins only."""
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{settings.host}:{settings.port}"}}
    if settings.ws_port is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{settings.host}:{settings.ws_port}"}
    if settings.tls_port is not None:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{settings.host}:{settings.tls_port}",
            "ssl": True,
            "certfile": settings.tls_cert,
            "keyfile": settings.tls_key,
        }
    return {
        "listeners": listeners,
        "timeout_disconnect_delay": 0,
        "plugins": {
            "broker.plugins.auth.AuthPlugin": {"access": access},
        },
    }


async def start_broker(settings: MqttSettings, engine: Engine, login: LoginSettings) -> SwitchboardBroker:
    """Start listening; ConfigError (one line) when a port is taken. Failed logins are throttled by
    ``login`` in the database, with the API's (switchboard/logins.py)."""
    for name, port in (("port", settings.port), ("ws_port", settings.ws_port), ("tls_port", settings.tls_port)):
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
    )
    broker = SwitchboardBroker(broker_config(settings, access), settings=settings, access=access, engine=engine)
    try:
        await broker.start()
    except BrokerError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise ConfigError(
                f"the MQTT broker cannot listen: {cause.strerror}; check mqtt.port, mqtt.ws_port and mqtt.tls_port"
            ) from None
        raise ConfigError(f"the MQTT broker could not start: {exc}") from None
    log.info("broker listening on %s", ", ".join(broker.addresses()))
    if settings.metrics_port is not None:
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
