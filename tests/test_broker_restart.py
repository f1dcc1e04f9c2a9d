"""Sessions, subscriptions, queued, in-flight and retained messages survive a broker restart, graceful or
``kill -9``: a message the broker acknowledged is not lost (amqtt 0.12.1 kept all of it in memory).
"""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import OPEN_LIMITS, stack_users
from tests.helpers import start_stack
from tests.rawmqtt import PUBACK, RawClient

Raw = Callable[[int], RawClient]


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_state_survives_a_restart(how: str, tmp_path: Path, raw: Raw) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    client_id, topic = f"dev-{secrets.token_hex(3)}", f"restart/{secrets.token_hex(3)}"
    try:
        device = raw(stack.mqtt_port)
        device.connect(client_id, clean=False)
        assert device.subscribe((f"{topic}/+", 1)) == [1]
        sender = raw(stack.mqtt_port)
        sender.connect(f"sender-{secrets.token_hex(3)}")
        packet_id = sender.publish(f"{topic}/a", b"in flight", qos=1)
        assert sender.expect(PUBACK).packet_id == packet_id
        in_flight = device.publishes(1)[0]  # received, never acknowledged
        device.drop()
        for n in range(3):
            packet_id = sender.publish(f"{topic}/a", f"queued {n}".encode(), qos=1)
            assert sender.expect(PUBACK).packet_id == packet_id  # acknowledged by the broker: it must survive
        packet_id = sender.publish(f"{topic}/state", b"retained", qos=1, retain=True)
        assert sender.expect(PUBACK).packet_id == packet_id
    finally:
        if how == "graceful":
            assert stack.stop(signal.SIGTERM) == 0
        else:
            stack.stop(signal.SIGKILL)

    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    try:
        stack.out.wait_for(r"restored \d+ persistent session\(s\), [1-9]\d* queued message\(s\), 1 retained", 10)
        device = raw(stack.mqtt_port)
        assert device.connect(client_id, clean=False).body == b"\x01\x00"  # session present
        again = device.publishes(1, ack=True)[0]
        assert (again.payload, again.dup, again.publish_id) == (b"in flight", True, in_flight.publish_id)
        queued = device.publishes(4, ack=True)
        assert [p.payload for p in queued] == [b"queued 0", b"queued 1", b"queued 2", b"retained"]
        sender = raw(stack.mqtt_port)
        sender.connect(f"sender-{secrets.token_hex(3)}")
        sender.publish(f"{topic}/b", b"after restart", qos=1)
        assert device.publishes(1, ack=True)[0].payload == b"after restart"  # the subscription survived
        late = raw(stack.mqtt_port)
        late.connect(f"late-{secrets.token_hex(3)}")
        late.subscribe((f"{topic}/state", 0))
        retained = late.publishes(1)[0]
        assert (retained.payload, retained.retain) == (b"retained", True)
    finally:
        assert stack.stop() == 0


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_presence_is_offline_after_a_restart(how: str, tmp_path: Path, raw: Raw) -> None:
    """Nobody is connected after a restart, so no retained "online" may outlive the broker that wrote it."""
    url = f"sqlite:///{tmp_path}/presence.db"
    stack = start_stack(url, tmp_path)
    with stack_users(stack) as users:
        alice, alice_pw = users.user("alice")
        bob, bob_pw = users.user("bob")
        users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    try:
        device = raw(stack.mqtt_port)
        device.connect(f"phone-{secrets.token_hex(3)}", alice, alice_pw)
        watcher = raw(stack.mqtt_port)
        watcher.connect(f"w-{secrets.token_hex(3)}", bob, bob_pw)
        watcher.subscribe((f"presence/{alice}", 0))
        assert json.loads(watcher.publishes(1)[0].payload)["status"] == "online"
    finally:
        if how == "graceful":
            assert stack.stop(signal.SIGTERM) == 0
        else:
            stack.stop(signal.SIGKILL)
    stack = start_stack(url, tmp_path)
    try:
        watcher = raw(stack.mqtt_port)
        watcher.connect(f"w-{secrets.token_hex(3)}", bob, bob_pw)
        watcher.subscribe((f"presence/{alice}", 0))
        assert json.loads(watcher.publishes(1)[0].payload)["status"] == "offline"
    finally:
        assert stack.stop() == 0
