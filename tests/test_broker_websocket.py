"""broker/websocket.py on its own: a real ``websockets`` client against ``serve_websocket`` feeding a
recording ``asyncio.Protocol``, over real sockets (ws, and wss with a certificate made by openssl).

What is proved: binary frames reach ``data_received`` in order; writes made in one loop turn leave as
one frame [MQTT-6.0.0-2]; a text frame closes the connection [MQTT-6.0.0-1]; the ``mqtt`` subprotocol
is selected and a client not offering it is refused [MQTT-6.0.0-3/4]; pause_reading holds frames back;
a client that stops reading makes the transport call pause_writing/resume_writing; close() flushes,
abort() does not; ``connection_lost`` is called exactly once however the connection ends.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broker.websocket import WebSocketListener, serve_websocket
from tests.helpers import self_signed_cert

T = TypeVar("T")
CHUNK = 16 * 1024


class Recorder(asyncio.Protocol):
    """Records what the transport does to it; ``on_data`` lets a test answer."""

    def __init__(self, on_data: Callable[[Recorder, bytes], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.lost: list[Exception | None] = []
        self.events: list[str] = []
        self.on_data = on_data
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.changed.set()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.changed.set()
        if self.on_data is not None:
            self.on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.changed.set()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.changed.set()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.changed.set()

    async def until(self, check: Callable[[], object]) -> None:
        while not check():
            self.changed.clear()
            await self.changed.wait()


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(test(), 60)

    return asyncio.run(bounded())


async def listening(
    on_data: Callable[[Recorder, bytes], None] | None = None, *, tls: ssl.SSLContext | None = None, **kw: Any
) -> tuple[WebSocketListener, list[Recorder]]:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(on_data))
        return made[-1]

    listener = await serve_websocket(factory, "127.0.0.1", 0, ssl=tls, backlog=16, **kw)
    return listener, made


def client(listener: WebSocketListener, uri: str = "", **kw: Any) -> Any:
    kw.setdefault("subprotocols", ["mqtt"])
    return connect(uri or f"ws://127.0.0.1:{listener.port}/mqtt", compression=None, **kw)


async def closed(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()
    return ws.close_code


async def ended(listener: WebSocketListener) -> None:
    """Every connection's handler has returned: nothing more can reach the protocols."""
    listener.close()
    await listener.wait_closed()


def test_binary_frames_reach_data_received_in_order() -> None:
    async def scenario() -> None:
        listener, made = await listening()
        async with client(listener) as ws:
            for frame in (b"one", b"two", b"\x00three"):
                await ws.send(frame)
            await made[0].until(lambda: len(made[0].chunks) == 3)
        assert made[0].chunks == [b"one", b"two", b"\x00three"]
        await ended(listener)
        assert made[0].lost == [None]

    run(scenario)


def test_writes_in_one_loop_turn_leave_as_one_binary_frame_mqtt_6_0_0_2() -> None:
    """[MQTT-6.0.0-2]: packets may share a frame; the transport gathers what one turn wrote."""

    def answer(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"\x20\x02")
        protocol.transport.writelines([b"\x00", bytearray(b"\x00"), memoryview(b"|" + data)])

    async def scenario() -> None:
        listener, _ = await listening(answer)
        async with client(listener) as ws:
            await ws.send(b"first")
            assert await ws.recv() == b"\x20\x02\x00\x00|first"
            await ws.send(b"second")
            assert await ws.recv() == b"\x20\x02\x00\x00|second"
        await ended(listener)

    run(scenario)


def test_a_burst_bigger_than_a_frame_is_cut_into_frames() -> None:
    """Packets may span frames [MQTT-6.0.0-2]: a burst over 256 KiB leaves as several frames, in order,
    so a client capping a message at 1 MiB (websockets' default) still reads it."""
    burst = bytes(range(256)) * 2400  # 600 KiB

    def answer(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(burst)

    async def scenario() -> None:
        listener, _ = await listening(answer)
        async with client(listener) as ws:
            await ws.send(b"go")
            frames = [await ws.recv() for _ in range(3)]
            assert [len(f) for f in frames] == [256 * 1024, 256 * 1024, len(burst) - 512 * 1024]
            assert b"".join(frames) == burst
        await ended(listener)

    run(scenario)


def test_text_frame_closes_the_connection_mqtt_6_0_0_1() -> None:
    """[MQTT-6.0.0-1]: a text data frame closes the connection; the protocol never sees it, and learns
    of the end once, with an error saying why."""

    async def scenario() -> None:
        listener, made = await listening()
        async with client(listener) as ws:
            await ws.send(b"binary")
            await ws.send("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            assert await closed(ws) == 1003
        await ended(listener)
        assert made[0].chunks == [b"binary"]
        assert len(made[0].lost) == 1
        assert isinstance(made[0].lost[0], ConnectionError)
        assert "MQTT-6.0.0-1" in str(made[0].lost[0])

    run(scenario)


def test_mqtt_subprotocol_is_selected_and_required_mqtt_6_0_0_3_and_4() -> None:
    """[MQTT-6.0.0-3/4]: the client offers ``mqtt`` and the server selects it; a client offering none,
    or only other names, is refused with HTTP 400 naming the header to send."""

    async def scenario() -> None:
        listener, made = await listening()
        for offered in (["mqtt"], ["chat", "mqtt"]):
            async with client(listener, subprotocols=offered) as ws:
                assert ws.subprotocol == "mqtt"
                await ws.send(b"x")
                await made[-1].until(lambda: made[-1].chunks)
                assert made[-1].transport is not None
                assert made[-1].transport.get_extra_info("subprotocol") == "mqtt"
        served = len(made)
        for refused in (None, ["mqttv3.1"], ["chat"]):
            with pytest.raises(InvalidStatus) as excinfo:
                async with client(listener, subprotocols=refused):
                    pass
            assert excinfo.value.response.status_code == 400
            assert b"Sec-WebSocket-Protocol: mqtt" in excinfo.value.response.body
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)  # a browser opening the URL
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 426") and b"connect an MQTT client" in answer
        assert len(made) == served  # a refused handshake never reaches the broker
        await ended(listener)

    run(scenario)


def test_wss_serves_over_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    def echo(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(data[::-1])

    async def scenario() -> None:
        listener, made = await listening(echo, tls=server_tls)
        async with client(listener, uri=f"wss://localhost:{listener.port}/", ssl=client_tls) as ws:
            await ws.send(b"secret")
            assert await ws.recv() == b"terces"
            assert made[0].transport is not None
            assert made[0].transport.get_extra_info("sslcontext") is server_tls
            assert made[0].transport.get_extra_info("peername")[0] == "127.0.0.1"
        with pytest.raises(ssl.SSLError):  # the same port refuses a client that does not trust it
            async with client(listener, uri=f"wss://localhost:{listener.port}/"):
                pass
        await ended(listener)
        assert made[0].lost == [None]

    run(scenario)


def test_pause_reading_holds_frames_back_until_resumed() -> None:
    def pause(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        if data == b"0":
            protocol.transport.pause_reading()

    async def scenario() -> None:
        listener, made = await listening(pause)
        frames = [str(n).encode() for n in range(100)]
        async with client(listener) as ws:
            for frame in frames[:4]:
                await ws.send(frame)
            await asyncio.wait_for(await ws.ping(), 30)  # the server has read every frame before the ping
            for _ in range(20):
                await asyncio.sleep(0)
            assert made[0].chunks == [b"0"]
            for frame in frames[4:]:  # more than websockets queues (4): its own flow control holds them
                await ws.send(frame)
            assert made[0].chunks == [b"0"]
            assert made[0].transport is not None
            made[0].transport.resume_reading()
            await made[0].until(lambda: len(made[0].chunks) == len(frames))
        assert made[0].chunks == frames
        await ended(listener)

    run(scenario)


def test_a_client_that_stops_reading_pauses_the_writer_then_resumes_it() -> None:
    """Back-pressure: writes pile up behind a client that does not read until the buffer passes the
    high-water mark (pause_writing), and drain below the low one once it reads again (resume_writing)."""
    written: list[int] = []

    def pump(protocol: Recorder) -> None:
        assert protocol.transport is not None
        if "pause_writing" in protocol.events:
            return
        protocol.transport.write(b"x" * CHUNK)
        written.append(CHUNK)
        asyncio.get_running_loop().call_soon(pump, protocol)

    async def scenario() -> None:
        listener, made = await listening(lambda p, _data: pump(p))
        async with client(listener, max_queue=2) as ws:
            await ws.send(b"go")
            await made[0].until(lambda: "pause_writing" in made[0].events)
            transport = made[0].transport
            assert transport is not None
            assert transport.get_write_buffer_size() > 64 * 1024
            received = 0
            while received < sum(written):
                received += len(await ws.recv())
            await made[0].until(lambda: made[0].events == ["pause_writing", "resume_writing"])
            assert received == sum(written)
            assert transport.get_write_buffer_size() == 0
        await ended(listener)

    run(scenario)


def test_abort_drops_a_connection_whose_client_stopped_reading() -> None:
    """A client that never reads cannot hold a connection open: abort() ends it even while a send is
    stuck behind the full socket (websockets' own close would wait for the client to drain first)."""

    def flood(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        if "pause_writing" not in protocol.events:
            protocol.transport.write(b"x" * CHUNK)
            asyncio.get_running_loop().call_soon(flood, protocol, data)

    async def scenario() -> None:
        listener, made = await listening(flood)
        async with client(listener, max_queue=2) as ws:
            await ws.send(b"go")
            await made[0].until(lambda: "pause_writing" in made[0].events)
            assert made[0].transport is not None
            made[0].transport.abort()
            await ended(listener)  # the server let go while the client still reads nothing
            assert made[0].lost == [None]
            assert await closed(ws) == 1006  # what was in flight, then no close frame

    run(scenario)


def test_set_write_buffer_limits_moves_the_marks() -> None:
    def burst(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.set_write_buffer_limits(high=100, low=10)
        protocol.transport.write(b"y" * 101)  # over 100 at once: paused before anything is sent

    async def scenario() -> None:
        listener, made = await listening(burst)
        async with client(listener) as ws:
            await ws.send(b"go")
            assert await ws.recv() == b"y" * 101
            await made[0].until(lambda: made[0].events == ["pause_writing", "resume_writing"])
        await ended(listener)

    run(scenario)


def test_close_sends_what_was_written_then_closes_once() -> None:
    def bye(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"bye")
        protocol.transport.close()
        assert protocol.transport.is_closing()
        protocol.transport.write(b"ignored after close")
        protocol.transport.close()

    async def scenario() -> None:
        listener, made = await listening(bye)
        async with client(listener) as ws:
            await ws.send(b"go")
            await ws.send(b"not delivered after close")
            assert await ws.recv() == b"bye"
            assert await closed(ws) == 1000
        await ended(listener)
        assert made[0].chunks[0] == b"go"
        assert made[0].lost == [None]

    run(scenario)


def test_abort_drops_unsent_writes_and_reports_the_end_once() -> None:
    def drop(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"never sent")
        protocol.transport.abort()
        protocol.transport.abort()

    async def scenario() -> None:
        listener, made = await listening(drop)
        async with client(listener) as ws:
            await ws.send(b"go")
            await made[0].until(lambda: made[0].lost)  # asyncio's contract: soon, not after a handshake
            assert await closed(ws) == 1006  # no close frame: the TCP connection was dropped
        await ended(listener)
        assert made[0].lost == [None]

    run(scenario)


def test_a_protocol_error_in_data_received_drops_the_connection_and_is_reported_once() -> None:
    def broken(protocol: Recorder, data: bytes) -> None:
        raise RuntimeError("bug in the protocol")

    async def scenario() -> None:
        listener, made = await listening(broken)
        async with client(listener) as ws:
            await ws.send(b"boom")
            await ws.send(b"never seen")
            assert await closed(ws) == 1006
        await ended(listener)
        assert made[0].chunks == [b"boom"]
        assert len(made[0].lost) == 1 and isinstance(made[0].lost[0], RuntimeError)

    run(scenario)


def test_a_client_vanishing_without_a_close_frame_is_an_error_once() -> None:
    async def scenario() -> None:
        listener, made = await listening()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await made[0].until(lambda: made[0].transport)
        writer.close()  # TCP FIN, no WebSocket close frame
        await made[0].until(lambda: made[0].lost)
        await ended(listener)
        assert len(made[0].lost) == 1
        assert isinstance(made[0].lost[0], ConnectionResetError)

    run(scenario)


def test_a_frame_larger_than_two_packets_is_refused() -> None:
    """A frame may hold two of the largest packets (a packet over the maximum within that reaches the protocol,
    which refuses it as over TCP); a bigger one is closed with 1009."""

    async def scenario() -> None:
        listener, made = await listening(max_packet_bytes=1024)
        async with client(listener) as ws:
            await ws.send(b"z" * 2 * (1024 + 5))  # two of the largest packets with their fixed headers: allowed
            await made[0].until(lambda: made[0].chunks)
            await ws.send(b"z" * (2 * (1024 + 5) + 1))
            assert await closed(ws) == 1009  # message too big
        await ended(listener)
        assert [len(c) for c in made[0].chunks] == [2058]
        assert len(made[0].lost) == 1 and isinstance(made[0].lost[0], ConnectionResetError)

    run(scenario)


def test_close_stops_accepting_but_keeps_open_connections() -> None:
    def echo(protocol: Recorder, data: bytes) -> None:
        assert protocol.transport is not None
        protocol.transport.write(data)

    async def scenario() -> None:
        listener, made = await listening(echo)
        async with client(listener) as ws:
            listener.close()
            with pytest.raises((OSError, InvalidStatus)):  # refused, or 503 from a socket uvloop closes late
                async with client(listener, open_timeout=10):
                    pass
            await ws.send(b"still here")
            assert await ws.recv() == b"still here"
            waiting: Awaitable[None] = asyncio.ensure_future(listener.wait_closed())
            assert made[0].transport is not None
            made[0].transport.close()
            await closed(ws)
            await waiting
        assert made[0].lost == [None]

    run(scenario)
