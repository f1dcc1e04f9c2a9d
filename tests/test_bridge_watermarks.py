"""Presence is stored as last-seen per user; receipts as per-user, per-conversation watermarks that only
move forward (through the running stack, so the broker's own presence messages are what is stored)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from sqlmodel import Session, select

from switchboard.tables import Conversation, Presence, Receipt, RejectedMessage
from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub, wait_for
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]


def test_presence_changes_are_stored_as_last_seen(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    alice, alice_pw = chat_users.user("alice")

    def presence() -> Presence | None:
        with Session(chat_users.engine) as session:
            return session.get(Presence, alice)

    device = raw(chat_stack.mqtt_port)
    device.connect(f"p-{secrets.token_hex(3)}", alice, alice_pw)
    online = wait_for(lambda: (p := presence()) is not None and p.status == "online" and p, what="online stored")
    device.disconnect()
    offline = wait_for(lambda: (p := presence()) is not None and p.status == "offline" and p, what="offline stored")
    assert offline.last_seen >= online.last_seen


def test_receipts_move_watermarks_forward_only(chat_stack: Stack, chat_users: Users) -> None:
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    mallory, mallory_pw = chat_users.user("mallory")
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    for n in range(3):
        mosquitto_pub(
            chat_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": f"r{n}", "body": "x"})
        )

    def receipt(user: str) -> Receipt | None:
        with Session(chat_users.engine) as session:
            return session.get(Receipt, (user, conversation))

    def send(user: str, password: str, up_to: int, status: str) -> None:
        body = json.dumps({"conversation": conversation, "up_to_seq": up_to, "status": status})
        mosquitto_pub(chat_stack.mqtt_port, user, password, f"receipt/{alice}/{user}", body)

    wait_for(lambda: _last_seq(chat_users, conversation) == 3, what="3 messages stored")
    send(bob, bob_pw, 3, "delivered")
    wait_for(lambda: (r := receipt(bob)) is not None and r.delivered_seq == 3, what="delivered watermark")
    send(bob, bob_pw, 2, "read")
    wait_for(lambda: (r := receipt(bob)) is not None and r.read_seq == 2, what="read watermark")
    send(bob, bob_pw, 1, "read")  # older: ignored
    send(bob, bob_pw, 99, "delivered")  # beyond the last message: clamped to 3
    send(mallory, mallory_pw, 3, "read")  # not part of the conversation: rejected, not stored
    wait_for(lambda: _rejected_count(chat_users, f"receipt/{alice}/{mallory}") == 1, what="mallory's receipt rejected")
    final = receipt(bob)
    assert final is not None and (final.delivered_seq, final.read_seq) == (3, 2)
    assert receipt(mallory) is None


def _last_seq(users: Users, conversation: str) -> int:
    with Session(users.engine) as session:
        row = session.get(Conversation, conversation)
        return row.last_seq if row is not None else 0


def _rejected_count(users: Users, topic: str) -> int:
    with Session(users.engine) as session:
        return len(session.exec(select(RejectedMessage).where(RejectedMessage.topic == topic)).all())
