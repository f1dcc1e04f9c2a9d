"""MQTT 5 session state survives a broker restart, graceful or ``kill -9``, as 3.1.1 sessions do
(tests/test_broker_restart.py): a session's expiry keeps counting while the broker is down, its subscription
options hold, and a queued message keeps its properties and its Message Expiry Interval, counted from the
original publish. Real broker (``switchboard up`` as a subprocess) restarted on the same state file, paho-mqtt
2.x clients with ``protocol=MQTTv5``. A state file written before MQTT 5 still loads (in-process, real SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.access import AccessControl
from broker.hub import Hub
from broker.persistence import StateStore
from broker.sessions import Limits, V5Properties
from tests.conftest import OPEN_LIMITS, stack_users
from tests.helpers import NoReceiveChecks, Stack, start_stack, wait_for
from tests.mqtt5 import V5Client, new_topic, props

Clients = Callable[..., V5Client]
RESTORED = r"restored \d+ persistent session\(s\)"


def _stop(stack: Stack, how: str) -> None:
    if how == "graceful":
        assert stack.stop(signal.SIGTERM) == 0
    else:
        stack.stop(signal.SIGKILL)


def _restart(url: str, tmp_path: Path) -> Stack:
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    stack.out.wait_for(RESTORED, 10)
    return stack


def _committed(clients: Clients, stack: Stack) -> None:
    """Returns once the broker's state file holds everything before: a QoS 1 PUBACK follows its commit."""
    barrier = clients(stack.mqtt_port)
    barrier.connect()
    barrier.publish(new_topic(), b"x", qos=1)


def _expiry(seconds: int) -> object:
    return props(PacketTypes.CONNECT, SessionExpiryInterval=seconds)


def _wait_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_session_expiry_keeps_counting_across_a_restart_MQTT_3_1_2_11(
    how: str, tmp_path: Path, clients: Clients
) -> None:
    """A v5 session with a 2 s expiry interval is gone 2 s after its client left, restart or not; one with an hour
    is still there [MQTT 5.0 §3.1.2.11.2]. On ``kill -9`` the clients were still connected: their time counts from
    the restart."""
    url = f"sqlite:///{tmp_path}/expiry.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    short_id, long_id, topic = f"short-{secrets.token_hex(3)}", f"long-{secrets.token_hex(3)}", new_topic()
    try:
        for client_id, seconds in ((short_id, 2), (long_id, 3600)):
            client = clients(stack.mqtt_port, client_id)
            client.connect(properties=_expiry(seconds))
            assert client.subscribe((topic, 1)) == [1]
            if how == "graceful":
                client.disconnect()
        _committed(clients, stack)  # the sessions too
    finally:
        _stop(stack, how)
    stack = _restart(url, tmp_path)
    try:
        expired_by = time.monotonic() + 2.5
        assert clients(stack.mqtt_port, long_id).connect(clean_start=False, properties=_expiry(3600))[0].session_present
        _wait_until(expired_by)
        flags, _reason, _props = clients(stack.mqtt_port, short_id).connect(clean_start=False, properties=_expiry(2))
        assert not flags.session_present
    finally:
        assert stack.stop() == 0


def test_queued_message_keeps_its_properties_and_expiry_across_a_restart_MQTT_3_3_2_5(
    tmp_path: Path, clients: Clients
) -> None:
    """Queued for an offline v5 subscriber, then ``kill -9``: the message with a 2 s Message Expiry Interval is
    never delivered after the restart [MQTT-3.3.2-5]; the other arrives with its user property and content type
    unchanged [MQTT-3.3.2-17, -20] and the expiry left from its original publish [MQTT-3.3.2-6]."""
    url = f"sqlite:///{tmp_path}/messages.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    client_id, topic = f"away-{secrets.token_hex(3)}", new_topic()
    try:
        away = clients(stack.mqtt_port, client_id)
        away.connect(properties=_expiry(3600))
        assert away.subscribe((topic, 1)) == [1]
        away.disconnect()
        publisher = clients(stack.mqtt_port)
        publisher.connect()
        short = props(PacketTypes.PUBLISH, MessageExpiryInterval=2)
        assert publisher.publish(topic, b"short-lived", 1, short)[0].value == 0
        kept = props(
            PacketTypes.PUBLISH, MessageExpiryInterval=3600, UserProperty=[("k", "v")], ContentType="text/plain"
        )
        assert publisher.publish(topic, b"kept", 1, kept)[0].value == 0  # acknowledged: it must survive
        received = time.monotonic()  # the broker had both before their PUBACKs: they wait at least from here
    finally:
        _stop(stack, "kill -9")
    stack = _restart(url, tmp_path)
    try:
        _wait_until(received + 3)
        back = clients(stack.mqtt_port, client_id)
        assert back.connect(clean_start=False, properties=_expiry(3600))[0].session_present
        got = back.message()
        assert got.payload == b"kept"
        assert got.properties.UserProperty == [("k", "v")]
        assert got.properties.ContentType == "text/plain"
        assert 3600 - 60 < got.properties.MessageExpiryInterval <= 3600 - 3  # waited 3 s or more, down and up
        assert back.no_message(1.0)
    finally:
        assert stack.stop() == 0


def test_subscription_options_survive_a_restart_MQTT_3_8_3_3(tmp_path: Path, clients: Clients) -> None:
    """No Local [MQTT-3.8.3-3] and Retain As Published [MQTT-3.3.1-12] hold for a subscription restored from the
    state file."""
    url = f"sqlite:///{tmp_path}/options.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    client_id, topic = f"opts-{secrets.token_hex(3)}", new_topic()
    try:
        first = clients(stack.mqtt_port, client_id)
        first.connect(properties=_expiry(3600))
        options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
        assert [code.value for code in first.subscribe((topic, options))] == [1]
        first.disconnect()
    finally:
        _stop(stack, "graceful")
    stack = _restart(url, tmp_path)
    try:
        back = clients(stack.mqtt_port, client_id)
        assert back.connect(clean_start=False, properties=_expiry(3600))[0].session_present
        back.publish(topic, b"my own", qos=1)
        other = clients(stack.mqtt_port)
        other.connect()
        other.client.publish(topic, b"retained by another", qos=1, retain=True)
        got = back.message()
        assert (got.payload, got.retain) == (b"retained by another", True)
    finally:
        assert stack.stop() == 0


def test_subscription_identifier_survives_a_restart_MQTT_3_3_4_3(tmp_path: Path, clients: Clients) -> None:
    """A subscription restored from the state file (``kill -9``) still carries the Subscription Identifier its
    SUBSCRIBE gave [MQTT-3.3.4-3]."""
    url = f"sqlite:///{tmp_path}/ids.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    client_id, topic = f"ids-{secrets.token_hex(3)}", new_topic()
    try:
        first = clients(stack.mqtt_port, client_id)
        first.connect(properties=_expiry(3600))
        assert first.subscribe((topic, 1), properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7)) == [1]
        first.disconnect()
        _committed(clients, stack)  # the subscription too
    finally:
        _stop(stack, "kill -9")
    stack = _restart(url, tmp_path)
    try:
        back = clients(stack.mqtt_port, client_id)
        assert back.connect(clean_start=False, properties=_expiry(3600))[0].session_present
        other = clients(stack.mqtt_port)
        other.connect()
        other.publish(topic, b"hello", qos=1)
        got = back.message()
        assert (got.payload, got.properties.SubscriptionIdentifier) == (b"hello", [7])
    finally:
        assert stack.stop() == 0


def test_retained_message_keeps_its_properties_and_expiry_across_a_restart_MQTT_3_3_2_5(
    tmp_path: Path, clients: Clients
) -> None:
    """A retained message restored after ``kill -9`` carries the properties it was published with [MQTT-3.3.2-4]
    and the expiry left from its publish [MQTT-3.3.2-6]; one whose expiry passed is not sent [MQTT-3.3.2-5]."""
    url = f"sqlite:///{tmp_path}/retained.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    kept_topic, short_topic = new_topic(), new_topic()
    try:
        publisher = clients(stack.mqtt_port)
        publisher.connect()
        short = props(PacketTypes.PUBLISH, MessageExpiryInterval=2)
        publisher.client.publish(short_topic, b"short-lived", qos=1, retain=True, properties=short)
        kept = props(PacketTypes.PUBLISH, MessageExpiryInterval=3600, UserProperty=[("room", "lobby")])
        publisher.client.publish(kept_topic, b"kept", qos=1, retain=True, properties=kept).wait_for_publish(20)
        received = time.monotonic()  # the broker had both before the second's PUBACK
    finally:
        _stop(stack, "kill -9")
    stack = _restart(url, tmp_path)
    try:
        _wait_until(received + 3)
        late = clients(stack.mqtt_port)
        late.connect()
        assert late.subscribe((kept_topic, 1), (short_topic, 1)) == [1, 1]
        got = late.message()
        assert (got.payload, got.retain) == (b"kept", True)
        assert got.properties.UserProperty == [("room", "lobby")]
        assert 3600 - 60 < got.properties.MessageExpiryInterval <= 3600 - 3  # waited 3 s or more, down and up
        assert late.no_message(1.0)
    finally:
        assert stack.stop() == 0


def _will(client: V5Client, topic: str, payload: bytes, delay: int) -> V5Client:
    client.client.will_set(topic, payload, qos=1, properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay))
    return client


def test_delayed_will_survives_a_restart_MQTT_3_1_2_8_and_3_1_3_9(tmp_path: Path, clients: Clients) -> None:
    """Wills still delayed when the broker is killed are kept in the state file [MQTT-3.1.2-8]: one whose delay
    ended while the broker was down is published at start, one due later is published when due, and one whose
    client is back in time is never published [MQTT-3.1.3-9]. (25 s: a restart on a loaded machine takes a while.)"""
    url = f"sqlite:///{tmp_path}/wills.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    topic, watcher_id, back_id = new_topic(), f"watch-{secrets.token_hex(3)}", f"back-{secrets.token_hex(3)}"
    try:
        watcher = clients(stack.mqtt_port, watcher_id)
        watcher.connect(properties=_expiry(3600))
        assert watcher.subscribe((topic, 1)) == [1]
        watcher.disconnect()
        dropped = time.monotonic()
        for name, delay in (("soon", 2), ("later", 25), (back_id, 25)):
            client = _will(clients(stack.mqtt_port, name if name == back_id else None), topic, name.encode(), delay)
            client.connect(properties=_expiry(60))
            client.drop()
        time.sleep(0.5)  # the drops reach the broker
        _committed(clients, stack)  # the wills too
    finally:
        _stop(stack, "kill -9")
    stack = _restart(url, tmp_path)
    try:
        back = clients(stack.mqtt_port, back_id)
        assert back.connect(clean_start=False, properties=_expiry(60))[0].session_present
        back_in_time = time.monotonic() - dropped < 25  # a restart slower than that: its will was due at start
        _wait_until(dropped + 3)
        watching = clients(stack.mqtt_port, watcher_id)
        assert watching.connect(clean_start=False, properties=_expiry(3600))[0].session_present
        got = [watching.message().payload, watching.message(40).payload]
        with contextlib.suppress(queue.Empty):
            got.append(watching.message(2.0).payload)
        assert got == [b"soon", b"later"] if back_in_time else got[:2] == [b"soon", b"later"]
    finally:
        assert stack.stop() == 0


@pytest.mark.parametrize("how", ["kill -9", "graceful"])
def test_wills_of_clients_connected_when_the_broker_dies_are_published_after_restart_MQTT_3_1_2_8(
    how: str, tmp_path: Path, clients: Clients
) -> None:
    """The broker killed (``kill -9``) while clients with wills are connected: the crash closed their connections
    without a DISCONNECT, so each will is published after the restart [MQTT-3.1.2-8]: at once for a clean 3.1.1
    client and for a v5 client whose session ends with the connection (Clean Start, Session Expiry 0), after its
    Will Delay Interval (counted from start-up) for a v5 client with a session, and never for one that is back
    within it [MQTT-3.1.3-9]. A graceful stop publishes none (the clients did nothing wrong)."""
    url = f"sqlite:///{tmp_path}/live-wills.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    topic, watcher_id, back_id = new_topic(), f"watch-{secrets.token_hex(3)}", f"back-{secrets.token_hex(3)}"
    open_clients: list[mqtt.Client] = []
    try:
        watcher = clients(stack.mqtt_port, watcher_id)
        watcher.connect(properties=_expiry(3600))
        assert watcher.subscribe((topic, 1)) == [1]
        watcher.disconnect()
        old = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"v311-{secrets.token_hex(3)}", protocol=mqtt.MQTTv311)
        old.will_set(topic, b"v311", qos=1)
        old.connect("127.0.0.1", stack.mqtt_port)
        old.loop_start()
        open_clients.append(old)
        for name, delay, session in ((b"v5 clean", 30, 0), (b"v5 delayed", 3, 60), (b"v5 back", 8, 60)):
            client = _will(clients(stack.mqtt_port, back_id if name == b"v5 back" else None), topic, name, delay)
            assert client.connect(properties=_expiry(session))[1].value == 0
            client.client.loop_stop()  # connected until the broker dies; never reconnects by itself
        wait_for(old.is_connected, timeout=20, what="the 3.1.1 client's CONNACK")
        old.loop_stop()
        _committed(clients, stack)  # the wills too
    finally:
        _stop(stack, how)
    stack = _restart(url, tmp_path)
    try:
        restarted = time.monotonic()
        if how == "kill -9":
            back = clients(stack.mqtt_port, back_id)
            assert back.connect(clean_start=False, properties=_expiry(60))[0].session_present
            assert time.monotonic() - restarted < 8  # back within its will delay
        watching = clients(stack.mqtt_port, watcher_id)
        assert watching.connect(clean_start=False, properties=_expiry(3600))[0].session_present
        if how == "kill -9":
            got = sorted(watching.message().payload for _ in range(2))
            assert got == [b"v311", b"v5 clean"]
            assert watching.no_message(1.0)  # the delayed one waits its 3 s
            assert watching.message().payload == b"v5 delayed"
        _wait_until(restarted + 10)  # past every delay
        assert watching.no_message(1.0)
    finally:
        for client in open_clients:
            client.disconnect()
        assert stack.stop() == 0


def test_presence_held_offline_for_a_will_delay_is_offline_after_kill_9(tmp_path: Path, clients: Clients) -> None:
    """A user whose client dropped with a Will Delay Interval is still shown online (its offline waits); the broker
    killed then: after the restart the retained presence says offline (``Hub._reset_presence``), never an online
    nobody is behind (broker.presence_delay)."""
    url = f"sqlite:///{tmp_path}/presence.db"
    stack = start_stack(url, tmp_path)
    with stack_users(stack) as users:
        alice, alice_pw = users.user("alice")
        bob, bob_pw = users.user("bob")
        users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    try:
        watcher = clients(stack.mqtt_port, user=bob, password=bob_pw)
        watcher.connect()
        watcher.subscribe((f"presence/{alice}", 1))
        phone = clients(stack.mqtt_port, f"{alice}-phone", user=alice, password=alice_pw)
        _will(phone, f"presence/{alice}", b'{"status": "offline"}', 60)
        phone.connect(properties=_expiry(120))
        assert json.loads(watcher.message().payload)["status"] == "online"
        phone.drop()
        assert watcher.no_message(1.5)  # offline held for the will delay
    finally:
        _stop(stack, "kill -9")
    stack = start_stack(url, tmp_path)
    try:
        late = clients(stack.mqtt_port, user=bob, password=bob_pw)
        late.connect()
        late.subscribe((f"presence/{alice}", 1))
        got = late.message()
        assert (json.loads(got.payload)["status"], got.retain) == ("offline", True)
        assert late.no_message(1.0)
    finally:
        assert stack.stop() == 0


# Written by the code before MQTT 5 state was kept (and before $share): the file a broker upgrade finds.
OLD_SCHEMA = """
CREATE TABLE sessions (client_id TEXT PRIMARY KEY, username TEXT);
CREATE TABLE subscriptions (client_id TEXT, filter TEXT, qos INTEGER, PRIMARY KEY (client_id, filter));
CREATE TABLE pending (
    id INTEGER PRIMARY KEY, client_id TEXT, topic TEXT, payload BLOB, qos INTEGER, retain INTEGER,
    packet_id INTEGER, released INTEGER DEFAULT 0
);
CREATE TABLE incoming_qos2 (client_id TEXT, packet_id INTEGER, PRIMARY KEY (client_id, packet_id));
CREATE TABLE retained (topic TEXT PRIMARY KEY, payload BLOB, qos INTEGER);
INSERT INTO sessions VALUES ('phone', NULL);
INSERT INTO subscriptions VALUES ('phone', 'news/#', 1);
INSERT INTO pending (id, client_id, topic, payload, qos, retain, packet_id)
    VALUES (7, 'phone', 'news/a', x'6869', 1, 0, NULL);
"""


def test_state_file_written_before_mqtt5_state_still_loads_and_then_keeps_it(tmp_path: Path) -> None:
    """An old-format state file is migrated (columns added with defaults): its 3.1.1 session, subscription and
    queued message come back as they were, and the file then keeps MQTT 5 state."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)

    async def scenario() -> None:
        store = StateStore(path)
        access = cast(AccessControl, NoReceiveChecks())
        hub = Hub(limits=Limits(), access=access, presence_for=lambda _u: False, store=store)
        await hub.restore()
        session = hub.sessions["phone"]
        assert session.subscriptions == {"news/#": 1}
        assert session.queue is not None
        assert [(m.topic, m.payload, m.properties) for m in session.queue] == [("news/a", b"hi", None)]
        assert session.v5 is None  # a 3.1.1 session: no expiry timer
        store.session_expiry("phone", 60, None)
        store.subscription_options("phone", "news/#", 0x04)
        store.queued(8, "phone", "news/b", b"v5", 1, False, None, None, V5Properties(b"\x03\x00\x01x", 0.0, None, True))
        await store.close()
        again = StateStore(path)
        stored = again.load().sessions["phone"]
        await again.close()
        assert (stored.expiry, stored.expires_at, stored.options) == (60, None, {"news/#": 0x04})
        assert stored.properties == {8: V5Properties(b"\x03\x00\x01x", 0.0, None, True)}

    asyncio.run(scenario())
