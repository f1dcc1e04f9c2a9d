"""An unsend made through REST (``DELETE /v1/messages/{conversation}/{seq}``) reaches clients live, as an MQTT
unsend does (issue 16 §2): the API queues the relation in the live-events outbox in the unsend's transaction,
the bridge publishes it on the unsent message's topic, and the bridge (subscribed to that topic too) takes it
for the message it stored, neither storing it twice nor refusing it. Real stack on Postgres and SQLite; the
receivers are mosquitto_sub and paho."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlmodel import col

from switchboard.tables import LiveEvent, RejectedMessage, Role
from tests.conftest import Users
from tests.helpers import MosquittoSub, PahoClient, Stack, chat_device, mosquitto_pub, wait_for

User = tuple[str, str]


def _history(http: httpx.Client, conversation: str) -> list[dict[str, Any]]:
    answer = http.get(f"/v1/conversations/{conversation}/messages", params={"after": 0})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


def _payloads(client: PahoClient, topic: str) -> list[dict[str, Any]]:
    return [json.loads(payload) for t, payload, _, _ in client.messages if t == topic]


def _outbox_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(LiveEvent)).scalar_one())


def _rejected(engine: Engine, topic: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(select(col(RejectedMessage.reason)).where(col(RejectedMessage.topic) == topic)).scalars()
        )


def _unsend(sender: str, target: str) -> dict[str, str]:
    return {"kind": "unsend", "sender": sender, "id": target}


def _live_unsend(
    receiver: MosquittoSub, other_device: PahoClient, topic: str, sender: str, target: str
) -> dict[str, Any]:
    """The unsend of ``sender``'s message ``target``, as ``receiver`` got it live on ``topic`` right after the
    message itself, and as the sender's other device got it too: the same bytes."""
    seen = receiver.wait_messages(2)
    assert [t for t, _ in seen] == [topic, topic]
    live: dict[str, Any] = json.loads(seen[1][1])
    assert live == {"id": live["id"], "body": "", "relates_to": _unsend(sender, target)}
    wait_for(lambda: len(_payloads(other_device, topic)) == 2, what=f"{sender}'s other device gets the unsend")
    assert _payloads(other_device, topic)[1] == live
    return live


def test_a_dm_unsent_through_rest_reaches_the_recipient_and_the_senders_other_device_live(
    stack: Stack, users: Users
) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice[0], bob[0])))
    topic = f"dm/{bob[0]}/{alice[0]}"
    recipient = MosquittoSub(stack.mqtt_port, *bob, f"dm/{bob[0]}/+")
    other_device = chat_device(stack, alice, f"dm/+/{alice[0]}", f"ack/{alice[0]}")
    try:
        assert recipient.granted() == [1]
        mosquitto_pub(stack.mqtt_port, *alice, topic, json.dumps({"id": "m1", "body": "sent to the wrong person"}))
        with stack.http(*alice) as http:
            wait_for(lambda: len(_history(http, conversation)) == 1, what="m1 stored")
            assert http.delete(f"/v1/messages/{conversation}/1").status_code == 204
            assert http.delete(f"/v1/messages/{conversation}/1").status_code == 204  # again: nothing more to say
            live = _live_unsend(recipient, other_device, topic, alice[0], "m1")
            # The bridge got it too, and took it for the unsend it stored: its ack names seq 2.
            ack = wait_for(
                lambda: next((a for a in _payloads(other_device, f"ack/{alice[0]}") if a["id"] == live["id"]), None),
                what="the bridge's ack of the unsend",
            )
            assert (ack["seq"], ack["conversation"]) == (2, conversation)
            history = _history(http, conversation)
        assert [(m["seq"], m["sender"], m["id"], m["unsent"]) for m in history] == [
            (1, alice[0], "m1", True),
            (2, alice[0], live["id"], False),
        ]
        assert history[1]["relates_to"] == {**_unsend(alice[0], "m1"), "seq": 1}
        assert len(recipient.messages()) == 2  # once live, not again
    finally:
        other_device.close()
        recipient.close()
    wait_for(lambda: _outbox_rows(users.engine) == 0, what="the outbox emptied")
    assert _rejected(users.engine, topic) == []


def test_a_group_message_unsent_by_an_admin_reaches_the_members_live_under_its_senders_topic(
    stack: Stack, users: Users
) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    admin = users.user("admin", role=Role.ADMIN)  # not a member
    team = users.group("team", [alice[0], bob[0], carol[0]])
    conversation, topic = f"group:{team}", f"group/{team}/{bob[0]}"
    member = MosquittoSub(stack.mqtt_port, *carol, f"group/{team}/+")
    other_device = chat_device(stack, bob, f"group/{team}/+", f"ack/{bob[0]}")
    with stack.http(*carol) as http:
        start = http.get("/v1/sync").json()["next"]
    try:
        assert member.granted() == [1]
        mosquitto_pub(stack.mqtt_port, *bob, topic, json.dumps({"id": "b1", "body": "something against the rules"}))
        with stack.http(*carol) as http, stack.http(*admin) as admin_http:
            wait_for(lambda: len(_history(http, conversation)) == 1, what="b1 stored")
            assert admin_http.delete(f"/v1/messages/{conversation}/1").status_code == 204
            live = _live_unsend(member, other_device, topic, bob[0], "b1")
            wait_for(
                lambda: any(a["id"] == live["id"] for a in _payloads(other_device, f"ack/{bob[0]}")),
                what="the bridge took the unsend for the stored one",
            )
            history = _history(http, conversation)
            synced = http.get("/v1/sync", params={"since": start}).json()["messages"]
        # Stored once, with the administrator as its sender and the same id and relation as live.
        assert [(m["seq"], m["sender"], m["id"], m["unsent"]) for m in history] == [
            (1, bob[0], "b1", True),
            (2, admin[0], live["id"], False),
        ]
        assert history[1]["relates_to"] == {**_unsend(bob[0], "b1"), "seq": 1}
        assert [(m["seq"], m["sender"]) for m in synced] == [(1, bob[0]), (2, admin[0])]
        assert all("error" not in a for a in _payloads(other_device, f"ack/{bob[0]}"))
    finally:
        other_device.close()
        member.close()
    wait_for(lambda: _outbox_rows(users.engine) == 0, what="the outbox emptied")
    assert _rejected(users.engine, topic) == []
