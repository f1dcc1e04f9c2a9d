"""The broker's Prometheus endpoint (mqtt.metrics_port): connections, subscriptions, messages in and out
per QoS, queued, dropped and auth failures move with what real clients do."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import httpx

from tests.conftest import Users
from tests.helpers import Stack, wait_for
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]


def _scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_broker_metrics_follow_the_traffic(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    port = int(chat_stack.out.wait_for(r"broker metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    before = _scrape(port)
    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    sender, receiver = raw(chat_stack.mqtt_port), raw(chat_stack.mqtt_port)
    assert sender.connect(f"m-{secrets.token_hex(3)}", *alice).body[1] == 0
    assert receiver.connect(f"m-{secrets.token_hex(3)}", *bob).body[1] == 0
    assert receiver.subscribe((f"dm/{bob[0]}/+", 1)) == [1]
    sender.publish(f"dm/{bob[0]}/{alice[0]}", b'{"id": "m1", "body": "hi"}', qos=1)
    sender.expect(4)  # PUBACK
    receiver.publishes(1, ack=True)
    assert raw(chat_stack.mqtt_port).connect("m-bad", alice[0], "wrong password").body[1] != 0

    def moved() -> dict[str, float] | None:
        after = _scrape(port)
        grew = after['switchboard_broker_messages_received_total{qos="1"}'] > before.get(
            'switchboard_broker_messages_received_total{qos="1"}', 0
        )
        return (
            after
            if grew
            and after["switchboard_broker_auth_failures_total"]
            > before.get("switchboard_broker_auth_failures_total", 0)
            else None
        )

    after = wait_for(moved, what="the counters to move")
    assert after["switchboard_broker_connections"] >= 2
    assert after["switchboard_broker_subscriptions"] >= 1
    assert after['switchboard_broker_messages_sent_total{qos="1"}'] > before.get(
        'switchboard_broker_messages_sent_total{qos="1"}', 0
    )
    for name in (
        "switchboard_broker_queued_messages",
        "switchboard_broker_inflight_messages",
        'switchboard_broker_messages_dropped_total{reason="queue_full"}',
        'switchboard_broker_messages_dropped_total{reason="slow_consumer"}',
        "switchboard_broker_refused_connections_total",
        "switchboard_broker_retained_messages",
    ):
        assert name in after, name
    assert all(re.fullmatch(r"[a-z_]+(\{.*\})?", name) for name in after)
