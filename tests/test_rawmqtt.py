"""tests/rawmqtt.py reads packets the same way over TCP and over WebSocket: a packet split over two frames (or
TCP segments), two packets in one, and the server's close read as None. A server in a thread sends bytes it
is given (websockets' public sync server for ws), so the test decides where the frames are cut."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.mqtt5 import TRANSPORTS
from tests.rawmqtt import CONNACK, PUBLISH, RawClient, packet

CONNACK_BYTES = packet(CONNACK, 0, b"\x00\x00")
FIRST, SECOND = packet(PUBLISH, 0, b"\x00\x03a/b" + b"one"), packet(PUBLISH, 0, b"\x00\x03a/c" + b"two" * 100)


@contextmanager
def sending(chunks: list[bytes], websocket: bool, hold: threading.Event | None = None) -> Iterator[int]:
    """A server on a free port that, once a client is there, sends ``chunks`` (one frame or write each), then
    closes (once ``hold`` is set, when given); its port."""
    if websocket:

        def handler(connection: ServerConnection) -> None:
            for chunk in chunks:
                connection.send(chunk)
            if hold is not None:
                hold.wait(10)
            connection.close()

        with serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol("mqtt")]) as server:
            thread = threading.Thread(target=server.serve_forever)
            thread.start()
            try:
                yield server.socket.getsockname()[1]
            finally:
                server.shutdown()
                thread.join(10)
        return
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept() -> None:
            connection, _address = listener.accept()
            with connection:
                for chunk in chunks:
                    connection.sendall(chunk)
                if hold is not None:
                    hold.wait(10)

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            thread.join(10)


@TRANSPORTS
def test_packets_split_or_joined_across_frames_read_the_same_and_the_close_reads_as_none(websocket: bool) -> None:
    both = CONNACK_BYTES + FIRST + SECOND
    cut = len(CONNACK_BYTES) + len(FIRST) + 5  # inside SECOND's topic
    with sending([both[:1], both[1:cut], both[cut:]], websocket) as port:
        client = RawClient(port, websocket=websocket)
        try:
            assert client.expect(CONNACK).body == b"\x00\x00"
            got = client.publishes(2)
            assert [(p.topic, p.payload) for p in got] == [("a/b", b"one"), ("a/c", b"two" * 100)]
            assert client.read(10) is None
            assert client.closed_by_broker(1)
        finally:
            client.close()


@TRANSPORTS
def test_a_quiet_connection_raises_timeout_error(websocket: bool) -> None:
    hold = threading.Event()
    with sending([CONNACK_BYTES], websocket, hold) as port:
        client = RawClient(port, websocket=websocket)
        try:
            assert client.expect(CONNACK).body == b"\x00\x00"
            with pytest.raises(TimeoutError):
                client.read(0.3)
            assert not client.closed_by_broker(0.3)
        finally:
            hold.set()
            client.close()
