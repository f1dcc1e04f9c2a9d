"""Interim MQTT-over-WebSocket listener, on websockets' public API, until ``broker.websocket`` lands.

Same contract as ``broker.websocket.serve_websocket`` (wt-ws): each WebSocket feeds an
``asyncio.Protocol`` through a transport-like :class:`_Transport`; what the protocol writes in one
event-loop turn goes out as one binary frame. Subprotocol ``mqtt``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

HIGH_WATER, LOW_WATER = 64 * 1024, 16 * 1024


class WebSocketListener:
    def __init__(self, server: Server) -> None:
        self._server = server
        self.port = int(next(iter(server.sockets)).getsockname()[1])

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class _Transport(asyncio.Transport):
    def __init__(self, connection: ServerConnection, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._connection = connection
        self._protocol = protocol
        self._out: list[bytes] = []
        self._wake = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self._paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._out.append(bytes(data))
        self._wake.set()
        if not self._paused and self.get_write_buffer_size() > HIGH_WATER:
            self._paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        self._out.clear()
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._connection.remote_address if name == "peername" else default

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data in self._out)

    async def send_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._out:
                data = b"".join(self._out)
                self._out.clear()
                await self._connection.send(data)
                if self._paused and self.get_write_buffer_size() <= LOW_WATER:
                    self._paused = False
                    self._protocol.resume_writing()
            if self._closing:
                await self._connection.close()
                return

    async def receive_forever(self) -> None:
        async for message in self._connection:
            await self._readable.wait()
            if self._closing:
                return
            if isinstance(message, str):
                return  # MQTT over WebSocket is binary frames only [MQTT-6.0.0-1]
            self._protocol.data_received(message)


async def serve_websocket(
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None,
    backlog: int,
) -> WebSocketListener:
    async def handler(connection: ServerConnection) -> None:
        protocol = protocol_factory()
        transport = _Transport(connection, protocol)
        protocol.connection_made(transport)
        sender = asyncio.create_task(transport.send_forever())
        try:
            await transport.receive_forever()
        except ConnectionClosed:
            pass
        finally:
            transport.close()
            try:
                await asyncio.wait_for(sender, 5)
            except (ConnectionClosed, TimeoutError):
                pass
            protocol.connection_lost(None)

    server = await serve(
        handler,
        host,
        port,
        ssl=ssl,
        backlog=backlog,
        subprotocols=[Subprotocol("mqtt")],
        compression=None,
        ping_interval=None,
        close_timeout=2,
    )
    return WebSocketListener(server)
