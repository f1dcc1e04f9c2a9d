"""Checks that a listening port is free before a service starts, with an error that says what to do."""

from __future__ import annotations

import errno
import socket

from switchboard.errors import ConfigError


def ensure_port_free(host: str, port: int, *, setting: str, env: str) -> None:
    """Raise ConfigError naming ``setting`` when ``host:port`` cannot be bound. Port 0 is always free."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise port_error(exc, host, port, setting=setting, env=env) from None


def port_error(exc: OSError, host: str, port: int, *, setting: str, env: str) -> ConfigError:
    """The ConfigError for a failed bind of ``host:port``."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{setting} = {port} ({env}): port {port} on {host} is already in use; "
            f"stop the other server or choose another port with {env}"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{setting} = {port} ({env}): no permission to listen on port {port}; use a port above 1023")
    return ConfigError(f"{setting} = {port} ({env}): cannot listen on {host}:{port}: {exc.strerror}")
