"""Notifications for offline users, sent to a real HTTP server in the test: one per burst, signed, retried
with the same id until answered, kept through a restart, none for online users or muted conversations."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from switchboard.db import make_engine
from switchboard.tables import Notification
from switchboard.topics import dm_conversation
from tests.conftest import Users
from tests.helpers import Stack, start_stack, wait_for
from tests.rawmqtt import PUBACK, RawClient
from tests.webhook import Webhook

SECRET = "test-webhook-secret"


def _notify_env(webhook: Webhook) -> dict[str, str]:
    return {
        "SWITCHBOARD_NOTIFY__WEBHOOK_URL": webhook.url,
        "SWITCHBOARD_NOTIFY__SECRET": SECRET,
        "SWITCHBOARD_NOTIFY__BATCH_SECONDS": "2",
    }


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def notify_stack(webhook: Webhook, tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(f"sqlite:///{tmp_path}/notify.db", tmp_path, **_notify_env(webhook))
    yield stack
    stack.stop()


def _users(stack: Stack) -> Users:
    return Users(make_engine(stack.database_url))


def _publish(stack: Stack, user: tuple[str, str], topic: str, bodies: list[str]) -> None:
    """Publish at QoS 1 on one connection as fast as the broker acknowledges."""
    client = RawClient(stack.mqtt_port)
    client.connect(f"{user[0]}-sender", *user)
    for n, body in enumerate(bodies):
        client.publish(topic, json.dumps({"id": f"{topic}-{n}-{time.monotonic_ns()}", "body": body}).encode(), qos=1)
    for _ in bodies:
        client.expect(PUBACK)
    client.disconnect()


def _quiet(seconds: float) -> None:
    """Time for a notification that must not come (batching 2 s, polling 0.5 s)."""
    time.sleep(seconds)


def test_a_burst_to_an_offline_user_is_one_signed_notification(notify_stack: Stack, webhook: Webhook) -> None:
    users = _users(notify_stack)
    alice, bob = users.user("alice"), users.user("bob")
    _publish(notify_stack, alice, f"dm/{bob[0]}/{alice[0]}", [f"message {n}" for n in range(1, 51)])

    (call,) = wait_for(lambda: webhook.for_user(bob[0]), timeout=30, what="bob's notification")
    assert call.json == {
        "id": call.headers["x-switchboard-notification-id"],
        "user": bob[0],
        "conversation": dm_conversation(alice[0], bob[0]),
        "seq": 50,
        "sender": alice[0],
        "preview": "message 50",
        "count": 50,
        "conversations": [dm_conversation(alice[0], bob[0])],
    }
    timestamp = call.headers["x-switchboard-timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + call.body, hashlib.sha256).hexdigest()
    assert call.headers["x-switchboard-signature"] == f"sha256={expected}"
    assert abs(int(timestamp) - time.time()) < 60
    _quiet(4)
    assert len(webhook.for_user(bob[0])) == 1  # one notification for the burst, and never again
    assert webhook.for_user(alice[0]) == []  # not for the sender
    users.engine.dispose()


def test_online_users_and_muted_conversations_get_no_notification(notify_stack: Stack, webhook: Webhook) -> None:
    users = _users(notify_stack)
    alice, bob, carol, dave = (users.user(name) for name in ("alice", "bob", "carol", "dave"))
    group = users.group("band", [alice[0], bob[0], carol[0], dave[0]])
    with notify_stack.http(*carol) as http:
        assert http.put(f"/v1/conversations/group:{group}/mute").json() == {
            "conversation": f"group:{group}",
            "muted": True,
        }
    online = RawClient(notify_stack.mqtt_port)
    online.connect("dave-phone", *dave)
    with notify_stack.http(*alice) as http:
        wait_for(
            lambda: http.get("/v1/presence", params={"user": dave[0]}).json()["presence"][0]["status"] == "online",
            what="dave's presence stored as online",
        )
    _publish(notify_stack, alice, f"group/{group}/{alice[0]}", ["rehearsal at 8"])

    (call,) = wait_for(lambda: webhook.for_user(bob[0]), timeout=30, what="bob's notification")
    assert (call.json["conversation"], call.json["preview"], call.json["count"]) == (
        f"group:{group}",
        "rehearsal at 8",
        1,
    )
    _quiet(4)
    assert webhook.for_user(carol[0]) == []  # muted
    assert webhook.for_user(dave[0]) == []  # connected
    online.disconnect()

    # carol unmutes: the next message notifies her
    with notify_stack.http(*carol) as http:
        assert http.delete(f"/v1/conversations/group:{group}/mute").json()["muted"] is False
    _publish(notify_stack, alice, f"group/{group}/{alice[0]}", ["moved to 9"])
    (again,) = wait_for(lambda: webhook.for_user(carol[0]), timeout=30, what="carol's notification")
    assert again.json["preview"] == "moved to 9"
    users.engine.dispose()


def test_a_failing_webhook_gets_the_same_notification_until_it_answers(notify_stack: Stack, webhook: Webhook) -> None:
    users = _users(notify_stack)
    alice, bob = users.user("alice"), users.user("bob")
    webhook.statuses.put(500)
    webhook.statuses.put(503)
    _publish(notify_stack, alice, f"dm/{bob[0]}/{alice[0]}", ["are you there?"])
    calls = wait_for(lambda: len(webhook.for_user(bob[0])) >= 3 and webhook.for_user(bob[0]), timeout=30)
    assert len({call.body for call in calls}) == 1  # the same batch, the same id, each time
    _quiet(4)
    assert len(webhook.for_user(bob[0])) == 3  # answered 200 the third time: done
    notify_stack.out.wait_for(r"notifications: the webhook answered 500 for user=.* retrying in 1s", 5)
    users.engine.dispose()


def test_a_notification_waits_in_the_outbox_through_a_restart(tmp_path: Path) -> None:
    webhook = Webhook()
    port = webhook.port
    webhook.close()  # nobody listens: the notification cannot be sent
    url = f"sqlite:///{tmp_path}/outbox.db"
    env = _notify_env(webhook)
    stack = start_stack(url, tmp_path, **env)
    users = _users(stack)
    alice, bob = users.user("alice"), users.user("bob")
    _publish(stack, alice, f"dm/{bob[0]}/{alice[0]}", ["while the webhook is down"])
    stack.out.wait_for("notifications: the webhook did not answer", 30)
    assert stack.stop(signal.SIGTERM) == 0

    with Session(users.engine) as session:
        (waiting,) = session.exec(select(Notification)).all()
    assert waiting.sent_at is None and waiting.attempts >= 1

    webhook = Webhook(port=port)
    stack = start_stack(url, tmp_path, **env)
    try:
        (call,) = wait_for(lambda: webhook.for_user(bob[0]), timeout=30, what="the notification after the restart")
        assert call.json["id"] == waiting.batch_id and call.json["preview"] == "while the webhook is down"
    finally:
        assert stack.stop() == 0
        webhook.close()
        users.engine.dispose()
