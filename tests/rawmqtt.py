"""A deliberately minimal MQTT 3.1.1 client over a plain socket, for tests that must control every byte:
withholding acknowledgements, sending malformed packets, going silent. Not for production use.

``RawClient(port, websocket=True)`` carries the same bytes over MQTT over WebSocket (path /mqtt, subprotocol
"mqtt", one binary frame per ``send``) through the ``websockets`` library's public sync client. Either way the
bytes received go into one buffer the packets are read from (a frame may hold part of a packet or several),
and a connection closed by the broker reads as None.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a WebSocket is opened: tests/test_import_graph.py runs this client inside the
    from websockets.sync.client import ClientConnection  # broker's process, which loads websockets only for ws

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _length(len(body)) + body


def connect_packet(
    client_id: str,
    user: str | None = None,
    password: str | None = None,
    *,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if user is not None:
        payload += _string(user)
    if password is not None:
        payload += _string(password)
    return packet(CONNECT, 0, _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        return int(struct.unpack("!H", self.body[:2])[0])

    # PUBLISH accessors
    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def topic(self) -> str:
        (n,) = struct.unpack("!H", self.body[:2])
        return self.body[2 : 2 + n].decode()

    @property
    def publish_id(self) -> int | None:
        if self.qos == 0:
            return None
        n = struct.unpack("!H", self.body[:2])[0]
        return int(struct.unpack("!H", self.body[2 + n : 4 + n])[0])

    @property
    def payload(self) -> bytes:
        n = struct.unpack("!H", self.body[:2])[0]
        return self.body[2 + n + (2 if self.qos else 0) :]


#: How long closing a WebSocket waits for the broker's close frame (a test's teardown must not hang on it).
WS_CLOSE_TIMEOUT = 2.0


class RawClient:
    """One TCP connection, or one WebSocket (``websocket=True``), speaking MQTT by hand."""

    def __init__(self, port: int, *, timeout: float = 10.0, websocket: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.websocket: ClientConnection | None = None
        self._timeout: float | None = timeout
        if websocket:
            from websockets.sync.client import connect as ws_connect
            from websockets.typing import Subprotocol

            self.websocket = ws_connect(
                f"ws://127.0.0.1:{port}/mqtt",
                sock=self.sock,
                subprotocols=[Subprotocol("mqtt")],
                compression=None,
                open_timeout=timeout,
                close_timeout=WS_CLOSE_TIMEOUT,
                max_size=None,
            )
        self._buffer = b""
        self._next_id = 0

    def send(self, data: bytes) -> None:
        """``data`` as it is: over WebSocket in one binary frame."""
        if self.websocket is not None:
            self.websocket.send(data)
        else:
            self.sock.sendall(data)

    def _receive(self) -> bytes:
        """The next bytes from the broker; b"" when it closed the connection; TimeoutError after the timeout."""
        if self.websocket is None:
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                raise
            except OSError:  # reset by the broker
                return b""
        from websockets.exceptions import ConnectionClosed

        try:
            message = self.websocket.recv(timeout=self._timeout)
        except ConnectionClosed:
            return b""
        assert isinstance(message, bytes), f"text frame from the broker: {message!r}"
        return message

    def connect(self, client_id: str, user: str | None = None, password: str | None = None, **kwargs: object) -> Packet:
        """Send CONNECT and return the CONNACK (body: session-present flag, return code)."""
        self.send(connect_packet(client_id, user, password, **kwargs))  # type: ignore[arg-type]
        return self.expect(CONNACK)

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        packet_id = self._id()
        body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([q]) for f, q in filters)
        self.send(packet(SUBSCRIBE, 2, body))
        return list(self.expect(SUBACK).body[2:])

    def unsubscribe(self, *filters: str) -> bool:
        """UNSUBSCRIBE; True when the UNSUBACK answers it."""
        packet_id = self._id()
        self.send(packet(UNSUBSCRIBE, 2, struct.pack("!H", packet_id) + b"".join(_string(f) for f in filters)))
        return self.expect(UNSUBACK).packet_id == packet_id

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        *,
        retain: bool = False,
        packet_id: int | None = None,
        dup: bool = False,
    ) -> int | None:
        if qos and packet_id is None:
            packet_id = self._id()
        body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
        self.send(packet(PUBLISH, (8 if dup else 0) | (qos << 1) | (1 if retain else 0), body))
        return packet_id

    def ack(self, kind: int, packet_id: int) -> None:
        self.send(packet(kind, 2 if kind == PUBREL else 0, struct.pack("!H", packet_id)))

    def disconnect(self) -> None:
        self.send(packet(DISCONNECT, 0, b""))
        self.close()

    def drop(self) -> None:
        """Vanish without DISCONNECT (the network died): over WebSocket, without a close frame either."""
        if self.websocket is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the WebSocket's reader thread
            except OSError:
                pass
            self.websocket.close()  # finds the socket gone: nothing more is sent
        self.sock.close()

    def _id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def read(self, timeout: float | None = None) -> Packet | None:
        """The next packet, or None when the broker closed the connection."""
        if timeout is not None:
            self._timeout = timeout
            if self.websocket is None:
                self.sock.settimeout(timeout)
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            chunk = self._receive()
            if not chunk:
                return None
            self._buffer += chunk

    def _parse(self) -> Packet | None:
        if len(self._buffer) < 2:
            return None
        multiplier, length, index = 1, 0, 1
        while True:
            if index >= len(self._buffer):
                return None
            byte = self._buffer[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        if len(self._buffer) < index + length:
            return None
        first = self._buffer[0]
        body = self._buffer[index : index + length]
        self._buffer = self._buffer[index + length :]
        return Packet(first >> 4, first & 0x0F, body)

    def expect(self, kind: int, timeout: float = 10.0) -> Packet:
        deadline = time.monotonic() + timeout
        while True:
            got = self.read(max(0.05, deadline - time.monotonic()))
            assert got is not None, f"connection closed while waiting for packet type {kind}"
            if got.kind == kind:
                return got
            assert time.monotonic() < deadline, f"no packet type {kind} within {timeout}s"

    def publishes(self, count: int, timeout: float = 10.0, *, ack: bool = False) -> list[Packet]:
        """The next ``count`` PUBLISH packets (other packets are skipped); ``ack`` answers QoS 1 with PUBACK."""
        found = []
        for _ in range(count):
            got = self.expect(PUBLISH, timeout)
            if ack and got.qos == 1:
                self.ack(PUBACK, got.publish_id or 0)
            found.append(got)
        return found

    def closed_by_broker(self, timeout: float = 10.0) -> bool:
        """True when the broker closes the connection within ``timeout`` (packets before that are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self.read(max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if got is None:
                return True
        return False

    def drain(self, quiet: float = 0.7) -> list[Packet]:
        """Every PUBLISH that arrives until the connection has been quiet for ``quiet`` seconds."""
        found = []
        while True:
            try:
                got = self.read(timeout=quiet)
            except TimeoutError:
                return found
            if got is None:
                return found
            if got.kind == PUBLISH:
                found.append(got)

    def publishes_for(self, seconds: float) -> list[Packet]:
        """Every PUBLISH that arrives within ``seconds``."""
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.read(timeout=left)
            except TimeoutError:
                break
            if got is None:
                break
            if got.kind == PUBLISH:
                found.append(got)
        return found

    def close(self) -> None:
        """Close the connection (over WebSocket with a close frame, when the broker is still there)."""
        if self.websocket is not None:
            self.websocket.close()
        self.sock.close()
