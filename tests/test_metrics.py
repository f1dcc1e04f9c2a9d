"""Prometheus endpoints of the broker (mqtt.metrics_port: connections, subscriptions, messages per QoS,
queued, dropped, auth failures) and of the API (api.metrics_port: latency by route template and status),
driven by real clients."""

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


def test_api_metrics_time_requests_by_route_template_and_status(chat_stack: Stack, chat_users: Users) -> None:
    port = int(chat_stack.out.wait_for(r"api metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    alice = chat_users.user("alice")
    with chat_stack.http(*alice) as http:
        assert http.get("/v1/conversations/dm:nobody-1:nobody-2/messages").status_code == 404
        assert http.get("/v1/conversations").status_code == 200
        assert http.get("/no/such/route").status_code == 404
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
    assert (
        'switchboard_api_request_seconds_count{method="GET",route="/v1/conversations/{conversation}/messages",'
        'status="404"}' in text
    )
    assert 'route="/v1/conversations",status="200"' in text
    assert 'route="unmatched",status="404"' in text
    assert "nobody-1" not in text  # ids never become labels
