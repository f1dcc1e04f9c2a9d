"""A paho-mqtt 2.x MQTT 5 client for tests, driven synchronously: every callback lands in a queue the test
waits on. paho is a client nobody here wrote, so what it accepts is what real v5 clients accept."""

from __future__ import annotations

import queue
import secrets
import struct
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers import Stack
from tests.rawmqtt import CONNECT, packet

TIMEOUT = 20.0

#: A test taking ``v5_port`` runs against Switchboard over TCP, Switchboard over WebSocket (``clients`` then
#: connects with paho's transport="websockets") and Mosquitto over TCP; tests.conftest's ``v5_port``.
OVER_TCP_AND_WS = pytest.mark.parametrize("v5_port", ["switchboard", "switchboard-ws", "mosquitto"], indirect=True)
#: The same for behaviour Mosquitto 2.0.11 does not share (its column in docs/broker.md says why).
SWITCHBOARD_OVER_TCP_AND_WS = pytest.mark.parametrize("v5_port", ["switchboard", "switchboard-ws"], indirect=True)
#: For tests on a stack of their own (chat_stack, door_stack): ``websocket`` False then True; see ``port_of``.
TRANSPORTS = pytest.mark.parametrize("websocket", [False, True], ids=["tcp", "ws"])


def port_of(stack: Stack, websocket: bool) -> int:
    """The stack's MQTT port over TCP, or over WebSocket (path /mqtt)."""
    port = stack.ws_port if websocket else stack.mqtt_port
    assert port, "no ws listener announced"
    return port


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any


def new_topic(prefix: str = "v5") -> str:
    return f"{prefix}/{secrets.token_hex(4)}"


def raw_connect(client_id: str, keepalive: int = 60, properties: bytes = b"\x00") -> bytes:
    """An MQTT 5 CONNECT (clean start) as raw bytes, for tests that drive a RawClient; ``properties`` with length."""
    body = struct.pack("!H", 4) + b"MQTT" + bytes((5, 0x02)) + struct.pack("!H", keepalive) + properties
    return packet(CONNECT, 0, body + struct.pack("!H", len(client_id)) + client_id.encode())


def props(packet: int, **values: object) -> Properties:
    """paho Properties for ``packet`` (e.g. PacketTypes.PUBLISH) with ``values`` by paho's attribute names."""
    built = Properties(packet)
    for name, value in values.items():
        setattr(built, name, value)
    return built


class V5Client:
    """One paho MQTT 5 connection."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        user: str | None = None,
        password: str | None = None,
        *,
        websocket: bool = False,
        version: int = 5,
    ):
        """``version`` 4 makes it an MQTT 3.1.1 client (clean session 1), for the v3/v5 interop tests."""
        self.port = port
        self.client_id = f"v5-{secrets.token_hex(4)}" if client_id is None else client_id
        transport = "websockets" if websocket else "tcp"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTProtocolVersion(version),
            transport=transport,
        )
        self.version = version
        if websocket:
            self.client.ws_set_options(path="/mqtt")
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connacks: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.disconnects: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.messages: queue.Queue[Received] = queue.Queue()
        self.acks: dict[int, queue.Queue[tuple[Any, Any]]] = {}
        self.subacks: queue.Queue[tuple[int, list[Any], Any]] = queue.Queue()
        self.unsubacks: queue.Queue[tuple[int, list[Any], Any]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, flags, reason, properties: self.connacks.put(
            (flags, reason, properties)
        )
        self.client.on_disconnect = lambda _c, _u, _flags, reason, properties: self.disconnects.put(
            (reason, properties)
        )
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            Received(m.topic, m.payload, m.qos, bool(m.retain), m.properties)
        )
        self.client.on_publish = lambda _c, _u, mid, reason, properties: self._ack(mid).put((reason, properties))
        self.client.on_subscribe = lambda _c, _u, mid, codes, properties: self.subacks.put((mid, codes, properties))
        self.client.on_unsubscribe = lambda _c, _u, mid, codes, properties: self.unsubacks.put((mid, codes, properties))

    def _ack(self, mid: int) -> queue.Queue[tuple[Any, Any]]:
        return self.acks.setdefault(mid, queue.Queue())

    def connect(self, *, clean_start: bool = True, properties: Properties | None = None, keepalive: int = 60) -> Any:
        """Connect; the CONNACK's (flags, reason code, properties)."""
        start: mqtt.CleanStartOption = clean_start if self.version == 5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive, clean_start=start, properties=properties)
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, *filters: tuple[str, Any], properties: Properties | None = None) -> list[Any]:
        """SUBSCRIBE (filter, qos or paho SubscribeOptions) pairs; SUBACK's reason codes."""
        self.client.subscribe(list(filters), properties=properties)
        return self.subacks.get(timeout=TIMEOUT)[1]

    def unsubscribe(self, *filters: str) -> list[Any]:
        self.client.unsubscribe(list(filters))
        return self.unsubacks.get(timeout=TIMEOUT)[1]

    def publish(self, topic: str, payload: bytes, qos: int = 1, properties: Properties | None = None) -> Any:
        """PUBLISH; for QoS 1/2 the (reason code, properties) of its PUBACK/PUBREC (or PUBCOMP)."""
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if qos == 0:
            return None
        return self._ack(info.mid).get(timeout=TIMEOUT)

    def message(self, timeout: float = TIMEOUT) -> Received:
        return self.messages.get(timeout=timeout)

    def no_message(self, seconds: float = 1.0) -> bool:
        try:
            self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def disconnect(self, reason: int = 0, properties: Properties | None = None) -> None:
        from paho.mqtt.reasoncodes import ReasonCode

        self.client.disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=reason), properties)
        self.client.loop_stop()

    def drop(self) -> None:
        """Close the socket without DISCONNECT (as a lost network would)."""
        sock = self.client.socket()
        if sock is not None:
            sock.close()  # paho sees the loss, the broker sees the connection closed
        self.client.loop_stop()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
