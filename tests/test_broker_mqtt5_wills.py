"""MQTT 5 wills on Switchboard's broker, with paho-mqtt 2.x (``protocol=MQTTv5``, and ``MQTTv311`` where a 3.1.1
client resumes a v5 session): the will's own Message Expiry Interval, the Will Delay Interval against a resumed
or ended session, and the broker's presence announcement held for the will delay, so that presence does not flap
on a short network blip. Part of tests/test_broker_mqtt5*.py; the restart cases are in
tests/test_broker_mqtt5_restart.py."""

from __future__ import annotations

import json
import queue
import secrets
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import Users
from tests.helpers import Stack
from tests.mqtt5 import (
    OVER_TCP_AND_WS,
    TIMEOUT,
    V5Client,
    new_topic,
    props,
)

Clients = Callable[..., V5Client]


def _with_will(client: V5Client, topic: str, payload: bytes, *, delay: int = 0, expiry: int | None = None) -> V5Client:
    """Give ``client`` a QoS 1 will with a Will Delay Interval and, if given, a Message Expiry Interval."""
    will = props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay)
    if expiry is not None:
        will.MessageExpiryInterval = expiry
    client.client.will_set(topic, payload, qos=1, properties=will)
    return client


def _session(seconds: int) -> Properties:
    return props(PacketTypes.CONNECT, SessionExpiryInterval=seconds)


class V311Client:
    """paho-mqtt 2.x speaking MQTT 3.1.1, clean session 0."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
        )
        self.connacks: queue.Queue[bool] = queue.Queue()
        self.client.on_connect = lambda _c, _u, flags, _reason, _props: self.connacks.put(flags.session_present)
        self.port = port

    def connect(self) -> bool:
        """Connect; whether the broker had a session for this client id."""
        self.client.connect("127.0.0.1", self.port, keepalive=60)
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@OVER_TCP_AND_WS
def test_will_message_expiry_counts_from_its_publish_MQTT_3_1_3_2_4(v5_port: int, clients: Clients) -> None:
    """The will's Message Expiry Interval [MQTT 5.0 §3.1.3.2.4] is its lifetime once published: a will with 2 s
    queued for an offline subscriber is not delivered after 3 s [MQTT-3.3.2-5]; one with 600 s arrives with the
    time left [MQTT-3.3.2-6]. Also Mosquitto."""
    topic = new_topic()
    subscriber_id = f"sub-{secrets.token_hex(3)}"
    subscriber = clients(v5_port, subscriber_id)
    subscriber.connect(properties=_session(600))
    assert [code.value for code in subscriber.subscribe((topic, 1))] == [1]
    subscriber.disconnect()
    short = _with_will(clients(v5_port), topic, b"short-lived", expiry=2)
    short.connect()
    kept = _with_will(clients(v5_port), topic, b"kept", expiry=600)
    kept.connect()
    short.drop()
    kept.drop()
    time.sleep(3.5)
    back = clients(v5_port, subscriber_id)
    assert back.connect(clean_start=False, properties=_session(600))[0].session_present
    got = back.message()
    assert got.payload == b"kept"
    assert 500 <= got.properties.MessageExpiryInterval <= 600
    assert back.no_message(1.0)


def test_clean_start_ends_the_session_so_its_delayed_will_goes_at_once_MQTT_3_1_2_8(
    open_stack: Stack, clients: Clients
) -> None:
    """A will waits for its Will Delay Interval or the end of the session, whichever comes first [MQTT-3.1.2-8]:
    the client back with Clean Start ends its old session, so the will of 60 s is published then (MQTT 5.0
    §3.1.4's comment on takeover says the same). Mosquitto 2.0.11 does not (checked: nothing within 10 s)."""
    v5_port, topic, client_id = open_stack.mqtt_port, new_topic(), f"phone-{secrets.token_hex(3)}"
    watcher = clients(v5_port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    phone = _with_will(clients(v5_port, client_id), topic, b"gone", delay=60)
    phone.connect(properties=_session(120))
    phone.drop()
    assert watcher.no_message(1.0)
    again = clients(v5_port, client_id)
    assert not again.connect(clean_start=True, properties=_session(120))[0].session_present
    assert watcher.message(10.0).payload == b"gone"


def test_v311_client_resuming_a_v5_session_keeps_it_and_cancels_its_will_MQTT_3_1_2_4_and_3_1_3_9(
    open_stack: Stack, clients: Clients
) -> None:
    """A 3.1.1 client (clean session 0) that resumes a v5 session makes it a 3.1.1 session, which never expires
    [MQTT 3.1.1 MQTT-3.1.2-4]: the v5 session's 2 s expiry no longer ends it once the 3.1.1 client leaves. And
    the new connection cancels the v5 client's delayed will [MQTT-3.1.3-9]."""
    port, topic, client_id = open_stack.mqtt_port, new_topic(), f"both-{secrets.token_hex(3)}"
    watcher = clients(port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    phone = _with_will(clients(port, client_id), topic, b"gone", delay=2)
    phone.connect(properties=_session(2))
    phone.drop()
    old = V311Client(port, client_id)
    assert old.connect()  # within the 2 s
    old.disconnect()
    time.sleep(3.5)
    assert watcher.no_message(0.5)
    again = V311Client(port, client_id)
    assert again.connect()
    again.disconnect()


def _port(request: pytest.FixtureRequest, broker: str, open_stack: Stack) -> int:
    return open_stack.mqtt_port if broker == "switchboard" else int(request.getfixturevalue("mosquitto"))


def _will_after_takeover(port: int, clients: Clients, *, delay: int, clean_start: bool, wait: float) -> bytes | None:
    """A v5 client with a QoS 1 will (Will Delay Interval ``delay``, a 120 s session) is taken over by a new
    connection with its client id and ``clean_start``: the will a watcher gets within ``wait`` seconds, if any."""
    topic, client_id = new_topic(), f"phone-{secrets.token_hex(3)}"
    watcher = clients(port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    old = _with_will(clients(port, client_id), topic, b"gone", delay=delay)
    old.connect(properties=_session(120))
    old.client.reconnect_delay_set(60, 120)  # stays away once thrown out
    assert clients(port, client_id).connect(clean_start=clean_start, properties=_session(120))[1].value == 0
    try:
        return watcher.message(wait).payload
    except queue.Empty:
        return None


@pytest.mark.parametrize(("broker", "expected"), [("switchboard", b"gone"), ("mosquitto", None)])
def test_takeover_publishes_the_will_of_a_v5_client_without_will_delay_MQTT_3_1_4_3(
    request: pytest.FixtureRequest, open_stack: Stack, clients: Clients, broker: str, expected: bytes | None
) -> None:
    """The server closes the connection a new one with the same client id takes over, "If the existing Client has
    a Will Message, that Will Message is published" [MQTT 5.0 §3.1.4, MQTT-3.1.4-3]: at once, without a Will Delay
    Interval, though the session goes on (Clean Start 0). The same scenario against Mosquitto 2.0.11: it publishes
    none (docs/broker.md's table)."""
    port = _port(request, broker, open_stack)
    assert _will_after_takeover(port, clients, delay=0, clean_start=False, wait=5.0) == expected


@OVER_TCP_AND_WS
def test_takeover_within_the_will_delay_publishes_no_will_MQTT_3_1_3_9(v5_port: int, clients: Clients) -> None:
    """A will with a Will Delay Interval of 2 s, its client taken over by a new connection to the same session
    (Clean Start 0): "If a new Network Connection to this Session is made before the Will Delay Interval has
    passed, the Server MUST NOT send the Will Message" [MQTT-3.1.3-9]; nothing after the 2 s either. Also Mosquitto."""
    assert _will_after_takeover(v5_port, clients, delay=2, clean_start=False, wait=4.0) is None


@pytest.mark.parametrize(("broker", "expected"), [("switchboard", b"gone"), ("mosquitto", None)])
def test_takeover_with_clean_start_publishes_the_delayed_will_at_once_MQTT_3_1_2_8(
    request: pytest.FixtureRequest, open_stack: Stack, clients: Clients, broker: str, expected: bytes | None
) -> None:
    """Taken over by a connection with Clean Start 1, which ends the old session: its will of 60 s goes at once,
    a will waiting no longer than its session [MQTT-3.1.2-8, MQTT 5.0 §3.1.3.2.2]. Mosquitto 2.0.11: none."""
    port = _port(request, broker, open_stack)
    assert _will_after_takeover(port, clients, delay=60, clean_start=True, wait=5.0) == expected


@pytest.mark.parametrize(("broker", "expected"), [("switchboard", b"gone"), ("mosquitto", None)])
def test_takeover_of_a_v311_client_publishes_its_will_MQTT_3_1_2_8(
    request: pytest.FixtureRequest, open_stack: Stack, clients: Clients, broker: str, expected: bytes | None
) -> None:
    """A 3.1.1 client taken over [MQTT-3.1.4-2]: its connection is closed without a DISCONNECT from it, and the
    will "MUST be published when the Network Connection is subsequently closed unless the Will Message has been
    deleted by the Server on receipt of a DISCONNECT Packet" [MQTT-3.1.2-8]. Mosquitto 2.0.11 publishes none
    (docs/broker.md's table). The chat's presence wills are the broker's own announcement, unaffected."""
    port = _port(request, broker, open_stack)
    topic, client_id = new_topic(), f"old-{secrets.token_hex(3)}"
    watcher = clients(port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    old = V311Client(port, client_id)
    old.client.will_set(topic, b"gone", qos=1)
    old.client.reconnect_delay_set(60, 120)
    assert not old.connect()
    new = V311Client(port, client_id)
    assert new.connect()
    try:
        try:
            got: bytes | None = watcher.message(5.0).payload
        except queue.Empty:
            got = None
        assert got == expected
    finally:
        new.disconnect()
        old.client.loop_stop()


def _statuses(watcher: V5Client, seconds: float) -> list[str]:
    """The presence statuses the watcher receives within ``seconds``."""
    found, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            found.append(json.loads(watcher.messages.get(timeout=left).payload)["status"])
        except queue.Empty:
            break
    return found


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
def test_presence_does_not_flap_when_the_client_is_back_within_its_will_delay_MQTT_3_1_3_9(
    chat_stack: Stack, chat_users: Users, clients: Clients, transport: str
) -> None:
    """The broker's own presence announcement is the user's will: a client whose connection drops and that
    reconnects within min(Will Delay Interval, Session Expiry Interval) is never announced offline (nor online
    again) [MQTT-3.1.3-9]; one that stays away is announced offline once the delay has passed. Over TCP and over
    MQTT over WebSocket (the web app's transport)."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    chat_users.group("friends", [alice, bob])  # presence reaches only users who share a conversation
    websocket = transport == "websocket"
    port, client_id = chat_stack.ws_port if websocket else chat_stack.mqtt_port, f"{alice}-phone"
    watcher = clients(chat_stack.mqtt_port, user=bob, password=bob_pw)
    watcher.connect()
    watcher.subscribe((f"presence/{alice}", 1))

    def phone() -> V5Client:
        client = clients(port, client_id, user=alice, password=alice_pw, websocket=websocket)
        return _with_will(client, f"presence/{alice}", b'{"status": "offline"}', delay=4)

    first = phone()
    assert first.connect(properties=_session(60))[1].value == 0
    assert _statuses(watcher, 2.0)[-1:] == ["online"]
    first.drop()  # the network changes
    second = phone()
    assert second.connect(clean_start=False, properties=_session(60))[0].session_present
    assert _statuses(watcher, 6.0) == []  # no offline, no second online
    second.drop()  # and now it stays away
    assert _statuses(watcher, 2.0) == []
    assert _statuses(watcher, 10.0)[:1] == ["offline"]
