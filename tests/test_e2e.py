"""End to end through ``switchboard up``, on Postgres and on SQLite, with mosquitto clients and HTTP.

Each test runs once per database (the ``stack`` fixture is parametrized by ``database_url``).
"""

from __future__ import annotations

import json

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from switchboard.tables import Message, RejectedMessage
from tests.conftest import Users
from tests.helpers import MosquittoSub, Stack, mosquitto_pub, wait_for


def _stored(engine: Engine, conversation: str) -> list[Message]:
    with Session(engine) as session:
        query = select(Message).where(Message.conversation_id == conversation).order_by(col(Message.seq))
        return list(session.exec(query).all())


def _rejected(engine: Engine, topic: str) -> list[RejectedMessage]:
    with Session(engine) as session:
        return list(session.exec(select(RejectedMessage).where(RejectedMessage.topic == topic)).all())


def test_dm_is_delivered_stored_acked_and_in_history(stack: Stack, users: Users) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    inbox = MosquittoSub(stack.mqtt_port, bob, bob_pw, f"dm/{bob}/+")
    acks = MosquittoSub(stack.mqtt_port, alice, alice_pw, f"ack/{alice}")
    try:
        assert inbox.granted() == [1]
        assert acks.granted() == [1]

        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "hello bob")

        assert inbox.wait_messages(1) == [(f"dm/{bob}/{alice}", "hello bob")]
        ((_, ack_text),) = acks.wait_messages(1)
        ack = json.loads(ack_text)
        conversation = "dm:" + ":".join(sorted((alice, bob)))
        assert ack["conversation"] == conversation
        assert ack["seq"] == 1
        assert ack["id"] and ack["stored_at"]
    finally:
        inbox.close()
        acks.close()

    with stack.http(bob, bob_pw) as http:
        page = http.get(f"/v1/conversations/{conversation}/messages").json()
    assert page["messages"] == [
        {
            "conversation": conversation,
            "seq": 1,
            "sender": alice,
            "id": ack["id"],
            "body": "hello bob",
            "stored_at": page["messages"][0]["stored_at"],
            "attachments": [],
            "relates_to": None,
            "edited_at": None,
            "unsent": False,
            "reactions": {},
        }
    ]
    assert page["next"] is None


def test_group_message_reaches_members_only(stack: Stack, users: Users, engine: Engine) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    mallory, mallory_pw = users.user("mallory")
    group = users.group("team", [alice, bob])

    member = MosquittoSub(stack.mqtt_port, bob, bob_pw, f"group/{group}/+")
    outsider = MosquittoSub(stack.mqtt_port, mallory, mallory_pw, f"group/{group}/+")
    try:
        assert member.granted() == [1]
        assert outsider.granted() == [128]
        mosquitto_pub(
            stack.mqtt_port, alice, alice_pw, f"group/{group}/{alice}", json.dumps({"id": "g1", "body": "hi"})
        )
        assert member.wait_messages(1)[0][0] == f"group/{group}/{alice}"
        # mallory may not post into the group either; her message is dropped, not stored.
        mosquitto_pub(stack.mqtt_port, mallory, mallory_pw, f"group/{group}/{mallory}", "let me in")
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"group/{group}/{alice}", json.dumps({"id": "g2", "body": "2"}))
        assert [topic for topic, _ in member.wait_messages(2)] == [f"group/{group}/{alice}"] * 2
    finally:
        member.close()
        outsider.close()
    stored = wait_for(lambda: len(rows := _stored(engine, f"group:{group}")) == 2 and rows, what="2 stored")
    assert [(m.seq, m.sender, m.client_msg_id) for m in stored] == [(1, alice, "g1"), (2, alice, "g2")]


def test_mallory_cannot_read_or_impersonate(stack: Stack, users: Users, engine: Engine) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    mallory, mallory_pw = users.user("mallory")
    conversation = "dm:" + ":".join(sorted((alice, bob)))

    snoop = MosquittoSub(stack.mqtt_port, mallory, mallory_pw, f"dm/{bob}/+")
    wildcard = MosquittoSub(stack.mqtt_port, mallory, mallory_pw, "dm/#")
    inbox = MosquittoSub(stack.mqtt_port, alice, alice_pw, f"dm/{alice}/+")
    try:
        assert snoop.granted() == [128]
        assert wildcard.granted() == [128]
        assert inbox.granted() == [1]
        # Publishing as bob: refused by the broker, never delivered, never stored.
        mosquitto_pub(stack.mqtt_port, mallory, mallory_pw, f"dm/{alice}/{bob}", "it is me, bob")
        mosquitto_pub(stack.mqtt_port, bob, bob_pw, f"dm/{alice}/{bob}", "the real bob")
        assert inbox.wait_messages(1) == [(f"dm/{alice}/{bob}", "the real bob")]
    finally:
        snoop.close()
        wildcard.close()
        inbox.close()
    rows = wait_for(lambda: _stored(engine, conversation), what="bob's message stored")
    assert [(m.sender, m.body) for m in rows] == [(bob, "the real bob")]

    with stack.http(mallory, mallory_pw) as http:
        response = http.get(f"/v1/conversations/{conversation}/messages")
    assert response.status_code == 403
    assert "not part of" in response.json()["detail"]
    with stack.http(alice, alice_pw) as http:
        assert http.get(f"/v1/conversations/{conversation}/messages").status_code == 200
        assert http.get("/v1/conversations/dm:nobody-x:nobody-y/messages").status_code == 404
        assert http.get("/v1/conversations/not-a-conversation/messages").status_code == 404
    with stack.http(alice, "wrong password") as http:
        response = http.get(f"/v1/conversations/{conversation}/messages")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_duplicate_sender_id_is_stored_once_and_acked_with_original_seq(
    stack: Stack, users: Users, engine: Engine
) -> None:
    alice, alice_pw = users.user("alice")
    bob, _ = users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    acks = MosquittoSub(stack.mqtt_port, alice, alice_pw, f"ack/{alice}")
    try:
        assert acks.granted() == [1]
        payload = json.dumps({"id": "same-id", "body": "once"})
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", payload)
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", payload)
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": "next", "body": "2"}))
        replies = [json.loads(text) for _, text in acks.wait_messages(3)]
    finally:
        acks.close()
    assert [(r["id"], r["seq"]) for r in replies] == [("same-id", 1), ("same-id", 1), ("next", 2)]
    assert [(m.seq, m.client_msg_id) for m in _stored(engine, conversation)] == [(1, "same-id"), (2, "next")]


def test_garbage_payload_is_refused_at_the_door_and_next_message_still_stored(
    stack: Stack, users: Users, engine: Engine
) -> None:
    """Issue 16 §1: the broker refuses what the bridge could not store, before routing it (so it is never in
    rejected_messages either), and tells the sender on ack/{sender}; the next message is stored."""
    alice, alice_pw = users.user("alice")
    bob, _ = users.user("bob")
    topic = f"dm/{bob}/{alice}"
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    acks = MosquittoSub(stack.mqtt_port, alice, alice_pw, f"ack/{alice}")
    try:
        assert acks.granted() == [1]
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, topic, b"{not json")
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, topic, b"\xff\xfe binary")
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, topic, json.dumps({"id": "x" * 65, "body": "long id"}))
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, topic, json.dumps({"id": "ok-1", "body": "good"}))

        rows = wait_for(lambda: _stored(engine, conversation), what="the good message")
        assert [(m.seq, m.client_msg_id, m.body) for m in rows] == [(1, "ok-1", "good")]
        replies = [json.loads(payload) for _, payload in acks.wait_messages(4)]
    finally:
        acks.close()
    reasons = sorted(reply["error"] for reply in replies if "error" in reply)
    assert len(reasons) == 3 and all(reply["conversation"] == conversation for reply in replies)
    assert any("invalid JSON" in reason for reason in reasons)
    assert any("not UTF-8" in reason for reason in reasons)
    assert any("the limit is 64" in reason for reason in reasons)
    assert _rejected(engine, topic) == []


def test_history_pages_backward_and_forward(stack: Stack, users: Users, engine: Engine) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    for n in range(5):
        mosquitto_pub(
            stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": f"m{n}", "body": str(n)})
        )
    wait_for(lambda: len(_stored(engine, conversation)) == 5, what="5 messages")

    with stack.http(bob, bob_pw) as http:
        first = http.get(f"/v1/conversations/{conversation}/messages", params={"limit": 2}).json()
        second = http.get(
            f"/v1/conversations/{conversation}/messages", params={"limit": 2, "before": first["next"]}
        ).json()
        forward = http.get(f"/v1/conversations/{conversation}/messages", params={"after": 3}).json()
        too_big = http.get(f"/v1/conversations/{conversation}/messages", params={"limit": 501})
        bad_cursor = http.get(f"/v1/conversations/{conversation}/messages", params={"before": "abc"})
    assert [m["seq"] for m in first["messages"]] == [5, 4] and first["next"] == 4
    assert [m["seq"] for m in second["messages"]] == [3, 2] and second["next"] == 2
    assert forward["direction"] == "forward"
    assert [m["seq"] for m in forward["messages"]] == [4, 5] and forward["next"] is None
    assert too_big.status_code == 422 and "500" in too_big.text
    assert bad_cursor.status_code == 422


def test_healthz_and_openapi(stack: Stack) -> None:
    import httpx

    with httpx.Client(base_url=stack.api, trust_env=False) as http:
        assert http.get("/healthz").json() == {"status": "ok", "database": "ok"}
        schema = http.get("/openapi.json").json()
        assert "/v1/conversations/{conversation}/messages" in schema["paths"]
        assert http.get("/docs").status_code == 200
