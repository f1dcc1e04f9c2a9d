"""amqtt authentication plugin: username and password against the users table (argon2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin

from broker.principal import Principal


class AuthPlugin(BaseAuthPlugin):
    """Accepts a CONNECT when :meth:`AccessControl.authenticate` does."""

    @dataclass
    class Config:
        access: Any = None  # broker.access.AccessControl, injected by broker.server

    async def authenticate(self, *, session: Principal) -> bool:
        return bool(await self.config.access.authenticate(session))
