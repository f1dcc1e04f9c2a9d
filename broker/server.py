"""Builds, starts and stops Switchboard's broker: amqtt with our plugins and overrides."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.errors import BrokerError
from sqlalchemy import Engine

from broker.access import AccessControl
from broker.connect import AuthenticateBeforeSession
from switchboard.errors import ConfigError
from switchboard.ports import ensure_port_free, port_error
from switchboard.settings import MqttSettings

log = logging.getLogger(__name__)


class SwitchboardBroker(AuthenticateBeforeSession):
    """amqtt's Broker with every override listed in docs/broker.md."""

    @property
    def port(self) -> int:
        """The TCP port the MQTT listener is bound to (useful when configured as 0)."""
        server: Any = self._servers["default"].instance
        return int(server.sockets[0].getsockname()[1])


def broker_config(settings: MqttSettings, access: AccessControl) -> dict[str, Any]:
    """amqtt's configuration for our settings: one TCP listener, our auth and ACL plugins only."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{settings.host}:{settings.port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": {
            "broker.plugins.auth.AuthPlugin": {"access": access},
            "broker.plugins.acl.AclPlugin": {"access": access},
        },
    }


async def start_broker(settings: MqttSettings, engine: Engine) -> SwitchboardBroker:
    """Start listening; ConfigError (one line) when the port is taken."""
    ensure_port_free(settings.host, settings.port, setting="mqtt.port", env="SWITCHBOARD_MQTT__PORT")
    access = AccessControl(engine, allow_anonymous=settings.allow_anonymous)
    broker = SwitchboardBroker(broker_config(settings, access), loop=asyncio.get_running_loop())
    try:
        await broker.start()
    except BrokerError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise port_error(
                cause, settings.host, settings.port, setting="mqtt.port", env="SWITCHBOARD_MQTT__PORT"
            ) from None
        raise ConfigError(f"the MQTT broker could not start: {exc}") from None
    log.info("broker listening on mqtt://%s:%d", settings.host, broker.port)
    return broker
