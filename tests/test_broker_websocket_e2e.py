"""MQTT over WebSocket through the whole broker (``switchboard up``), with clients nobody here wrote.

paho over ``ws`` and over ``wss`` (a certificate made by openssl, as docs/operations.md shows) connects,
subscribes and gets a QoS 1 message; a raw ``websockets`` client checks MQTT 3.1.1 section 6 byte by
byte: a text frame closes the connection [MQTT-6.0.0-1], a CONNECT split over two binary frames and
two packets in one frame are served [MQTT-6.0.0-2], a client not offering ``mqtt`` is refused
[MQTT-6.0.0-3].
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.conftest import Users, stack_users
from tests.helpers import Stack, self_signed_cert, start_stack
from tests.rawmqtt import PINGREQ, PUBLISH, SUBSCRIBE, connect_packet, packet

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
CONNACK_NOT_AUTHORIZED = b"\x20\x02\x00\x05"
PINGRESP = b"\xd0\x00"


@pytest.fixture(scope="module")
def wss_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """A stack with ws and wss listeners (its own SQLite file and self-signed certificate)."""
    workdir = tmp_path_factory.mktemp("wss-stack")
    cert, key = self_signed_cert(workdir)
    running = start_stack(
        f"sqlite:///{workdir}/wss.db",
        workdir,
        SWITCHBOARD_MQTT__WSS_PORT="0",
        SWITCHBOARD_MQTT__TLS_CERT=str(cert),
        SWITCHBOARD_MQTT__TLS_KEY=str(key),
    )
    yield running, cert
    assert running.stop() == 0, running.output()


@pytest.fixture
def users(wss_stack: tuple[Stack, Path]) -> Iterator[Users]:
    with stack_users(wss_stack[0]) as made:
        yield made


class WsClient:
    """paho over WebSocket (``transport="websockets"``), recording what it gets."""

    def __init__(self, port: int, user: str, password: str, cafile: Path | None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"ws-{secrets.token_hex(4)}", transport="websockets"
        )
        self.client.ws_set_options(path="/mqtt")
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile))
        self.client.username_pw_set(user, password)
        self.connected, self.subscribed, self.acked, self.got = (threading.Event() for _ in range(4))
        self.messages: list[tuple[str, bytes, int]] = []
        self.granted: list[int] = []
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_publish = lambda *_: self.acked.set()
        self.client.on_message = self.on_message
        self.client.connect("localhost" if cafile else "127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(20), "no CONNACK over the WebSocket"

    def on_connect(self, _c: object, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
        if not reason.is_failure:
            self.connected.set()

    def on_subscribe(self, _c: object, _u: object, _m: int, codes: list[mqtt.ReasonCode], _p: object) -> None:
        self.granted.extend(code.value for code in codes)
        self.subscribed.set()

    def on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload), message.qos))
        self.got.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_paho_over_websocket_subscribes_and_gets_a_qos1_message(
    scheme: str, wss_stack: tuple[Stack, Path], users: Users
) -> None:
    stack, cert = wss_stack
    port, cafile = (stack.ws_port, None) if scheme == "ws" else (stack.wss_port, cert)
    assert port, f"no {scheme} listener announced"
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    inbox = WsClient(port, bob, bob_pw, cafile)
    sender = WsClient(port, alice, alice_pw, cafile)
    try:
        inbox.client.subscribe(f"dm/{bob}/+", 1)
        assert inbox.subscribed.wait(20)
        assert inbox.granted == [1]
        sender.client.publish(f"dm/{bob}/{alice}", f"over {scheme}".encode(), qos=1)
        assert sender.acked.wait(20), "no PUBACK"
        assert inbox.got.wait(20)
        assert inbox.messages == [(f"dm/{bob}/{alice}", f"over {scheme}".encode(), 1)]
    finally:
        sender.close()
        inbox.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def raw(port: int, offered: list[str] | None) -> connect:
    """A raw WebSocket client offering these subprotocols."""
    subprotocols = None if offered is None else [Subprotocol(name) for name in offered]
    return connect(f"ws://127.0.0.1:{port}/mqtt", subprotocols=subprotocols, compression=None)


async def read_until_closed(ws: ClientConnection) -> list[bytes | str]:
    got: list[bytes | str] = []
    with pytest.raises(ConnectionClosed):
        while True:
            got.append(await ws.recv())
    return got


def test_a_text_frame_closes_the_connection_mqtt_6_0_0_1(wss_stack: tuple[Stack, Path]) -> None:
    """[MQTT-6.0.0-1]: a CONNECT sent in a text frame gets no CONNACK: the connection closes. (No
    username, so the packet is ASCII and therefore valid text; as a binary frame the same bytes get an
    answer, CONNACK 0x05 since this broker wants a login.)"""
    stack, _ = wss_stack
    connect_bytes = connect_packet(f"text-{secrets.token_hex(3)}")
    assert connect_bytes.isascii()

    async def scenario() -> None:
        async with raw(stack.ws_port, ["mqtt"]) as ws:
            await ws.send(connect_bytes.decode("ascii"))
            assert await read_until_closed(ws) == []
            assert ws.close_code == 1003  # unsupported data
        async with raw(stack.ws_port, ["mqtt"]) as ws:
            await ws.send(connect_bytes)
            assert await ws.recv() == CONNACK_NOT_AUTHORIZED

    run(scenario)


def test_packets_may_span_and_share_binary_frames_mqtt_6_0_0_2(wss_stack: tuple[Stack, Path], users: Users) -> None:
    """[MQTT-6.0.0-2]: a CONNECT split over two frames is one packet; SUBSCRIBE and PINGREQ in one frame
    are two."""
    stack, _ = wss_stack
    user, password = users.user("splitter")
    connect_bytes = connect_packet(f"split-{secrets.token_hex(3)}", user, password)
    topic = f"dm/{user}/+".encode()
    subscribe = packet(SUBSCRIBE, 2, struct.pack("!HH", 7, len(topic)) + topic + b"\x01")

    async def scenario() -> None:
        async with raw(stack.ws_port, ["mqtt"]) as ws:
            assert ws.subprotocol == "mqtt"  # [MQTT-6.0.0-4]
            await ws.send(connect_bytes[:3])
            await ws.send(connect_bytes[3:])
            assert await ws.recv() == CONNACK_ACCEPTED
            await ws.send(subscribe + packet(PINGREQ, 0, b""))
            replies = b""
            while len(replies) < 5 + 2:
                message = await ws.recv()
                assert isinstance(message, bytes)
                replies += message
            assert replies == b"\x90\x03\x00\x07\x01" + PINGRESP  # SUBACK(7, QoS 1), PINGRESP

    run(scenario)


def test_a_client_not_offering_the_mqtt_subprotocol_is_refused_mqtt_6_0_0_3(wss_stack: tuple[Stack, Path]) -> None:
    stack, _ = wss_stack

    async def scenario() -> None:
        for offered in (None, ["chat"]):
            with pytest.raises(InvalidStatus) as refused:
                async with raw(stack.ws_port, offered):
                    pass
            assert refused.value.response.status_code == 400
            assert b"Sec-WebSocket-Protocol: mqtt" in refused.value.response.body

    run(scenario)


def _publish(topic: str, qos: int, packet_id: int, payload: bytes) -> bytes:
    name = topic.encode()
    return packet(
        PUBLISH,
        qos << 1,
        struct.pack("!H", len(name)) + name + (struct.pack("!H", packet_id) if qos else b"") + payload,
    )


def test_a_websocket_subscriber_that_never_reads_pauses_its_websocket_publisher(open_stack: Stack) -> None:
    """Back-pressure through broker/websocket.py in both directions: the frames for a ws subscriber that
    stops reading pile up until its transport calls pause_writing; the broker then pauses reading the ws
    publisher (pause_reading), whose sends block; once the subscriber goes away the publisher is read
    again."""
    tag = secrets.token_hex(3)
    payload = b"x" * 1900  # under open_stack's max_packet_bytes (2048)

    async def mqtt_over_ws(client_id: str, **kw: Any) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{open_stack.ws_port}/mqtt", subprotocols=[Subprotocol("mqtt")], **kw)
        await ws.send(connect_packet(client_id))
        assert await ws.recv() == CONNACK_ACCEPTED
        return ws

    async def scenario() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", open_stack.ws_port))
        slow = await mqtt_over_ws(f"slow-{tag}", sock=sock, max_queue=1, close_timeout=1)
        topic = f"bp/{tag}/slow".encode()
        await slow.send(packet(SUBSCRIBE, 2, struct.pack("!HH", 1, len(topic)) + topic + b"\x01"))
        assert await slow.recv() == b"\x90\x03\x00\x01\x01"
        flooder = await mqtt_over_ws(f"flooder-{tag}")
        sent = 0
        with pytest.raises(TimeoutError):  # the broker stopped reading the flooder
            for n in range(50_000):  # 95 MB, QoS 0 with every tenth at QoS 1 (PUBACKs left unread)
                await asyncio.wait_for(
                    flooder.send(_publish(f"bp/{tag}/slow", int(n % 10 == 0), n % 60000 + 1, payload)), 5
                )
                sent += 1
        assert sent < 50_000, sent
        await slow.close()  # the subscriber goes away (dropped after 1 s: it reads nothing): the flooder is read again
        await asyncio.wait_for(flooder.send(_publish(f"bp/{tag}/other", 1, 60001, b"again")), 60)
        await flooder.close()

    run(scenario)
