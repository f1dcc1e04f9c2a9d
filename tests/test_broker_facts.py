"""Facts the broker owns, which clients must not be able to bend (issue 13, part 4): who sees presence,
the time of a presence change, and retained chat messages (stored once, never replayed)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from broker.access import AccessControl
from broker.hub import Hub
from broker.persistence import StateStore
from broker.sessions import Limits, V5Properties
from tests.conftest import CHAT_BRIDGE_PASSWORD, Users, stack_users
from tests.helpers import NoReceiveChecks, Stack, mosquitto_pub, wait_for
from tests.rawmqtt import PUBACK, RawClient

Raw = Callable[[int], RawClient]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_an_anonymous_wildcard_subscriber_sees_no_presence(open_stack: Stack, raw: Raw) -> None:
    """With mqtt.allow_anonymous on, '#' is open to anonymous clients, but the broker's own presence
    messages pass the same receive check as any message: users see them, the anonymous client does not."""
    with stack_users(open_stack) as users:
        alice, alice_pw = users.user("alice")
        bob, bob_pw = users.user("bob")
        users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    snoop = raw(open_stack.mqtt_port)
    snoop.connect(_id("snoop"))
    assert snoop.subscribe(("#", 1)) == [1]
    watcher = raw(open_stack.mqtt_port)
    watcher.connect(_id("watch"), bob, bob_pw)
    assert watcher.subscribe((f"presence/{alice}", 1)) == [1]

    device = raw(open_stack.mqtt_port)
    device.connect(_id("alice"), alice, alice_pw)
    device.disconnect()
    statuses = [json.loads(p.payload)["status"] for p in watcher.publishes(2, ack=True)]
    assert statuses == ["online", "offline"]  # a user allowed to read presence still gets it

    assert [p.topic for p in snoop.drain() if p.topic.startswith("presence/")] == []
    late = raw(open_stack.mqtt_port)  # nor is the retained presence handed to a new anonymous '#'
    late.connect(_id("late"))
    late.subscribe(("#", 0))
    assert [p.topic for p in late.drain() if p.topic.startswith("presence/")] == []


def test_the_time_of_a_presence_change_is_the_servers(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    """A client's own presence with a far-future "at" used to freeze it online: the bridge's watermark then
    ignored every later (true) offline. The broker stamps its own clock, so going offline is stored."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    chat_users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    watcher = raw(chat_stack.mqtt_port)
    watcher.connect(_id("watch"), bob, bob_pw)
    watcher.subscribe((f"presence/{alice}", 1))
    device = raw(chat_stack.mqtt_port)
    device.connect(_id("alice"), alice, alice_pw)
    assert json.loads(watcher.publishes(1, ack=True)[0].payload)["status"] == "online"

    forged = json.dumps({"status": "online", "at": "9999-12-31T23:59:59+00:00"}).encode()
    device.publish(f"presence/{alice}", forged, qos=1, retain=True)
    device.expect(PUBACK)
    passed_on = json.loads(watcher.publishes(1, ack=True)[0].payload)
    assert passed_on["status"] == "online"
    assert datetime.fromisoformat(passed_on["at"]) < datetime.now(UTC) + timedelta(minutes=1)  # the server's time

    device.publish(f"presence/{alice}", b'{"status": "away"}', qos=1)  # not a presence: dropped, not passed on
    device.expect(PUBACK)
    device.disconnect()
    assert json.loads(watcher.publishes(1, ack=True)[0].payload)["status"] == "offline"

    with chat_stack.http(bob, bob_pw) as http:

        def stored() -> dict[str, str]:
            return dict(http.get("/v1/presence", params={"user": alice}).json()["presence"][0])

        seen = wait_for(lambda: (p := stored())["status"] == "offline" and p, what="alice stored as offline")
        assert datetime.fromisoformat(seen["last_seen"]).year < 9999


def test_a_retained_chat_message_is_delivered_and_stored_once(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    """A retained plain-text DM used to be kept by the broker and sent again to the bridge each time it
    subscribed, and plain text gets a new server id each time: stored again per bridge reconnection. Chat
    topics are never retained now: the message is delivered and stored once, the retain flag ignored."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    inbox = raw(chat_stack.mqtt_port)
    inbox.connect(_id("inbox"), bob, bob_pw)
    inbox.subscribe((f"dm/{bob}/+", 1))

    mosquitto_pub(chat_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "kept by the broker?", extra=("-r",))
    live = inbox.publishes(1, ack=True)[0]
    assert (live.payload, live.retain) == (b"kept by the broker?", False)  # delivered normally
    with chat_stack.http(bob, bob_pw) as http:
        conversation = f"dm:{min(alice, bob)}:{max(alice, bob)}"

        def history() -> list[str]:
            return [
                m["body"]
                for m in http.get(f"/v1/conversations/{conversation}/messages", params={"after": 0}).json()["messages"]
            ]

        wait_for(lambda: history() == ["kept by the broker?"], what="the DM stored")

        # Take the bridge's session over for a moment: the bridge reconnects and subscribes again.
        connected = _count(chat_stack, "bridge: connected")
        thief = raw(chat_stack.mqtt_port)
        thief.connect("switchboard-bridge", "switchboard-bridge", CHAT_BRIDGE_PASSWORD, clean=False)
        thief.disconnect()
        wait_for(lambda: _count(chat_stack, "bridge: connected") > connected, what="the bridge reconnected")

        later = raw(chat_stack.mqtt_port)  # a new subscriber gets no retained copy either
        later.connect(_id("later"), bob, bob_pw)
        later.subscribe((f"dm/{bob}/+", 1))
        assert [p.payload for p in later.drain()] == []
        mosquitto_pub(chat_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", '{"id": "m2", "body": "marker"}')
        wait_for(lambda: "marker" in history(), what="the marker stored")
        assert history() == ["kept by the broker?", "marker"]


def _count(stack: Stack, text: str) -> int:
    return sum(text in line for line in stack.out.lines)


def test_chat_messages_retained_by_an_older_version_are_forgotten_at_start(tmp_path: Path) -> None:
    """A state file written before chat topics stopped being retained: its retained DM would be sent
    to the bridge again at every reconnection, so the broker drops it (from the file too) when it starts."""
    path = tmp_path / "state.db"

    async def scenario() -> tuple[list[str], list[tuple[str, bytes, int, V5Properties | None]]]:
        old = StateStore(path)
        old.retained("dm/bob/alice", b"hi", 1)
        old.retained("devices/lamp", b"on", 0)
        await old.close()
        store = StateStore(path)
        hub = Hub(
            limits=Limits(), access=cast(AccessControl, NoReceiveChecks()), presence_for=lambda _user: True, store=store
        )
        await hub.restore()
        await store.close()
        again = StateStore(path)
        kept = again.load().retained
        await again.close()
        return [retained.topic for retained in hub.retained.all()], kept

    assert asyncio.run(scenario()) == (["devices/lamp"], [("devices/lamp", b"on", 0, None)])
