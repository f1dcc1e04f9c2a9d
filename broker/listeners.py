"""The broker's listeners: TCP (``mqtt.port``), TLS (``mqtt.tls_port``), WebSocket (``mqtt.ws_port``) and
WebSocket over TLS (``mqtt.wss_port``; TLS and WSS share ``mqtt.tls_cert``/``mqtt.tls_key``).

Each listener feeds a fresh ``asyncio.Protocol`` per connection (``broker.connection.Connection``).
TCP and TLS are ``loop.create_server`` with a listen backlog of 4,096 (asyncio's default of 100 drops a
reconnect storm of thousands of clients into SYN retries); WebSocket goes through
``broker.websocket.serve_websocket``, which gives the same protocol a transport of its own. Nothing here
subclasses or reaches into a library: only public asyncio, ssl and websockets API.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from switchboard.errors import ConfigError
from switchboard.settings import MqttSettings

LISTEN_BACKLOG = 4096
SCHEMES = {"default": "mqtt", "ws": "ws", "tls": "mqtts", "wss": "wss"}


class Server(Protocol):
    """What a listener needs of the server under it (an ``asyncio.Server`` or a WebSocket listener)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(slots=True)
class Listener:
    name: str  # "default", "ws", "tls", "wss"
    port: int
    server: Server

    @property
    def scheme(self) -> str:
        return SCHEMES[self.name]


async def open_listeners(settings: MqttSettings, protocol_factory: Callable[[], asyncio.Protocol]) -> list[Listener]:
    """Open every configured listener; ConfigError (one line) when one cannot. Those already open are closed
    again on failure."""
    opened: list[Listener] = []
    try:
        opened.append(await _tcp("default", settings.host, settings.port, None, protocol_factory))
        if settings.ws_port is not None:
            opened.append(await _websocket("ws", settings, settings.ws_port, None, protocol_factory))
        context = tls_context(settings) if settings.tls_port is not None or settings.wss_port is not None else None
        if settings.tls_port is not None:
            opened.append(await _tcp("tls", settings.host, settings.tls_port, context, protocol_factory))
        if settings.wss_port is not None:
            opened.append(await _websocket("wss", settings, settings.wss_port, context, protocol_factory))
    except OSError as exc:
        await close_listeners(opened)
        raise ConfigError(
            f"the MQTT broker cannot listen: {exc.strerror or exc}; "
            "check mqtt.port, mqtt.ws_port, mqtt.tls_port and mqtt.wss_port"
        ) from None
    except BaseException:
        await close_listeners(opened)
        raise
    return opened


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The server's TLS context from ``mqtt.tls_cert`` and ``mqtt.tls_key``."""
    if not settings.tls_cert or not settings.tls_key:
        raise ConfigError("mqtt.tls_port and mqtt.wss_port need mqtt.tls_cert and mqtt.tls_key (PEM files)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {settings.tls_cert} / key {settings.tls_key}: {exc}; "
            "check mqtt.tls_cert and mqtt.tls_key"
        ) from None
    return context


async def _tcp(
    name: str, host: str, port: int, context: ssl.SSLContext | None, protocol_factory: Callable[[], asyncio.Protocol]
) -> Listener:
    server = await asyncio.get_running_loop().create_server(
        protocol_factory, host, port, ssl=context, backlog=LISTEN_BACKLOG, reuse_address=True
    )
    return Listener(name, int(server.sockets[0].getsockname()[1]), server)


async def _websocket(
    name: str,
    settings: MqttSettings,
    port: int,
    context: ssl.SSLContext | None,
    protocol_factory: Callable[[], asyncio.Protocol],
) -> Listener:
    from broker.websocket import serve_websocket  # the websockets library: loaded only for a WebSocket listener

    server = await serve_websocket(
        protocol_factory,
        settings.host,
        port,
        ssl=context,
        backlog=LISTEN_BACKLOG,
        max_packet_bytes=settings.max_packet_bytes,
    )
    return Listener(name, server.port, server)


async def close_listeners(listeners: list[Listener]) -> None:
    """Stop accepting connections (open ones are the broker's to close)."""
    for listener in listeners:
        listener.server.close()
