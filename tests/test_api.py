"""REST API beyond history: single messages with delivery/read state, read watermarks, presence."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import MosquittoSub, Stack, mosquitto_pub, run_mosquitto_pub, wait_for
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]


def _dm(stack: Stack, users: Users, count: int) -> tuple[tuple[str, str], tuple[str, str], str]:
    alice, bob = users.user("alice"), users.user("bob")
    for n in range(count):
        mosquitto_pub(stack.mqtt_port, *alice, f"dm/{bob[0]}/{alice[0]}", json.dumps({"id": f"m{n}", "body": str(n)}))
    conversation = "dm:" + ":".join(sorted((alice[0], bob[0])))
    with stack.http(*bob) as http:
        wait_for(
            lambda: len(http.get(f"/v1/conversations/{conversation}/messages").json()["messages"]) == count,
            what=f"{count} stored",
        )
    return alice, bob, conversation


def test_read_watermark_and_message_state(chat_stack: Stack, chat_users: Users) -> None:
    alice, bob, conversation = _dm(chat_stack, chat_users, 3)
    with chat_stack.http(*bob) as http:
        assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 2}).json() == {
            "conversation": conversation,
            "delivered_seq": 2,
            "read_seq": 2,
        }
        # forward only, and never past the last message
        assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 1}).json()["read_seq"] == 2
        assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 99}).json()["read_seq"] == 3
        bad = http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": "x"})
        assert bad.status_code == 422 and "up_to_seq" in bad.text
        extra = http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 1, "oops": True})
        assert extra.status_code == 422
    with chat_stack.http(*alice) as http:
        detail = http.get(f"/v1/messages/{conversation}/2").json()
        assert (detail["seq"], detail["id"], detail["sender"]) == (2, "m1", alice[0])
        assert detail["read_by"] == [bob[0]] and detail["delivered_to"] == [bob[0]]
        assert http.get(f"/v1/messages/{conversation}/7").status_code == 404
        assert http.get(f"/v1/messages/{conversation}/0").status_code == 422


def test_nobody_reads_or_marks_someone_elses_conversation(chat_stack: Stack, chat_users: Users) -> None:
    _, _, conversation = _dm(chat_stack, chat_users, 1)
    mallory = chat_users.user("mallory")
    with chat_stack.http(*mallory) as http:
        assert http.get(f"/v1/messages/{conversation}/1").status_code == 403
        assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 1}).status_code == 403
        assert http.post("/v1/conversations/dm:nobody-1:nobody-2/read", json={"up_to_seq": 1}).status_code == 404


def test_presence_of_users(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    chat_users.group("pair", [alice[0], bob[0]])  # presence is shown to users who share a conversation
    device = raw(chat_stack.mqtt_port)
    device.connect(f"d-{secrets.token_hex(3)}", *alice)
    with chat_stack.http(*bob) as http:

        def statuses() -> dict[str, str]:
            answer = http.get("/v1/presence", params=[("user", alice[0]), ("user", bob[0])]).json()["presence"]
            return {p["user"]: p["status"] for p in answer}

        wait_for(lambda: statuses() == {alice[0]: "online", bob[0]: "offline"}, what="alice online")
        assert http.get("/v1/presence", params={"user": "nobody-here"}).status_code == 404
        assert http.get("/v1/presence", params={"user": "bad name!"}).status_code == 422
        assert http.get("/v1/presence").status_code == 422


def test_conversations_newest_first_with_last_message_and_unread(chat_stack: Stack, chat_users: Users) -> None:
    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    carol = chat_users.user("carol")
    group = chat_users.group("team", [alice[0], bob[0], carol[0]])

    def send(sender: tuple[str, str], topic: str, msg_id: str) -> None:
        mosquitto_pub(chat_stack.mqtt_port, *sender, topic, json.dumps({"id": msg_id, "body": msg_id}))

    send(alice, f"dm/{bob[0]}/{alice[0]}", "d1")
    send(alice, f"dm/{bob[0]}/{alice[0]}", "d2")
    send(bob, f"dm/{alice[0]}/{bob[0]}", "d3")
    send(carol, f"group/{group}/{carol[0]}", "g1")
    send(carol, f"dm/{bob[0]}/{carol[0]}", "c1")  # bob's newest, and not alice's business
    dm = "dm:" + ":".join(sorted((alice[0], bob[0])))

    with chat_stack.http(*bob) as http:
        listing = wait_for(
            lambda: len(found := http.get("/v1/conversations").json()["conversations"]) == 3 and found,
            what="bob's 3 conversations",
        )
        assert [c["id"] for c in listing] == ["dm:" + ":".join(sorted((bob[0], carol[0]))), f"group:{group}", dm]
        by_id = {c["id"]: c for c in listing}
        assert by_id[dm]["last_message"]["id"] == "d3" and by_id[dm]["last_seq"] == 3
        assert by_id[dm]["unread"] == 2  # d1 and d2 from alice; d3 is bob's own
        http.post(f"/v1/conversations/{dm}/read", json={"up_to_seq": 1})
        again = {c["id"]: c for c in http.get("/v1/conversations").json()["conversations"]}
        assert again[dm]["unread"] == 1
        assert http.get("/v1/conversations", params={"limit": 1}).json()["conversations"][0]["id"] == listing[0]["id"]
        assert http.get("/v1/conversations", params={"limit": 0}).status_code == 422
    with chat_stack.http(*alice) as http:
        ids = {c["id"] for c in http.get("/v1/conversations").json()["conversations"]}
        assert ids == {dm, f"group:{group}"}


def test_token_works_for_the_api_and_as_the_mqtt_password(chat_stack: Stack, chat_users: Users) -> None:
    import httpx

    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    with httpx.Client(base_url=chat_stack.api, trust_env=False) as http:
        issued = http.post("/v1/auth/token", json={"username": bob[0], "password": bob[1]})
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert token.startswith("sbt_") and issued.json()["token_type"] == "bearer"
        bearer = {"Authorization": f"Bearer {token}"}
        assert http.get("/v1/conversations", headers=bearer).status_code == 200
        assert http.get("/v1/conversations", headers={"Authorization": "Bearer sbt_forged"}).status_code == 401
        assert http.post("/v1/auth/token", json={"username": bob[0], "password": "wrong"}).status_code == 401
        assert http.post("/v1/auth/token", json={"username": bob[0]}).status_code == 422
    # the token as the MQTT password: a phone never stores the password
    inbox = MosquittoSub(chat_stack.mqtt_port, bob[0], token, f"dm/{bob[0]}/+")
    try:
        assert inbox.granted() == [1]
        mosquitto_pub(chat_stack.mqtt_port, *alice, f"dm/{bob[0]}/{alice[0]}", "via token")
        assert inbox.wait_messages(1) == [(f"dm/{bob[0]}/{alice[0]}", "via token")]
    finally:
        inbox.close()
    # ... but only for its own user
    assert run_mosquitto_pub(chat_stack.mqtt_port, alice[0], token, f"dm/{bob[0]}/{alice[0]}", "x").returncode != 0


def test_broker_hooks_answer_for_external_brokers(chat_stack: Stack, chat_users: Users) -> None:
    """Shapes of mosquitto-go-auth (form or JSON, "acc", "ok") and EMQX (JSON, "action", "result")."""
    import httpx

    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    bridge = chat_users.user("bridge", role=Role.SERVICE)  # the external broker calls as a service account
    with httpx.Client(base_url=chat_stack.api, auth=bridge, trust_env=False) as http:

        def ok(path: str, **body: object) -> bool:
            answer = http.post(path, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["ok"] is (answer.json()["result"] == "allow")
            return bool(answer.json()["ok"])

        assert ok("/v1/mqtt/auth", username=alice[0], password=alice[1], clientid="c1")
        assert not ok("/v1/mqtt/auth", username=alice[0], password="wrong")
        form = http.post("/v1/mqtt/auth", data={"username": bob[0], "password": bob[1]})
        assert form.json()["result"] == "allow"
        assert ok("/v1/mqtt/acl", username=alice[0], topic=f"dm/{bob[0]}/{alice[0]}", acc=2)
        assert not ok("/v1/mqtt/acl", username=alice[0], topic=f"dm/{alice[0]}/{bob[0]}", acc=2)  # as bob
        assert ok("/v1/mqtt/acl", username=bob[0], topic=f"dm/{bob[0]}/+", action="subscribe")
        assert not ok("/v1/mqtt/acl", username=alice[0], topic=f"dm/{bob[0]}/+", action="subscribe")
        assert ok("/v1/mqtt/acl", username=alice[0], topic=f"dm/{bob[0]}/{alice[0]}", acc=1) is not False
        assert not ok("/v1/mqtt/acl", username="nobody-at-all", topic="presence/x", acc=4)
        # Bridges sharing a subscription on EMQX/VerneMQ: the filter after $share/{group}/ is what is decided.
        assert ok("/v1/mqtt/acl", username=bob[0], topic=f"$share/phones/dm/{bob[0]}/+", action="subscribe")
        assert not ok("/v1/mqtt/acl", username=alice[0], topic=f"$share/phones/dm/{bob[0]}/+", action="subscribe")
        assert not ok("/v1/mqtt/acl", username=bob[0], topic="$share/dm/", action="subscribe")
        assert not ok("/v1/mqtt/acl", username=bob[0], topic=f"$share/dm/{bob[0]}/+", acc=2)  # no publishing there
        assert ok("/v1/mqtt/auth", username=bridge[0], password=bridge[1], clientid="bridge-1")
        assert ok("/v1/mqtt/acl", username=bridge[0], topic="$share/switchboard/dm/#", action="subscribe")
        assert ok("/v1/mqtt/acl", username=bridge[0], topic=f"ack/{alice[0]}", action="publish")
        # An unsend made through REST goes out on the unsent message's topic (docs/protocol.md).
        assert ok("/v1/mqtt/acl", username=bridge[0], topic=f"dm/{bob[0]}/{alice[0]}", action="publish")
        assert not ok("/v1/mqtt/acl", username=bridge[0], topic=f"presence/{alice[0]}", action="publish")
        assert http.post("/v1/mqtt/acl", json={"username": alice[0], "topic": "x"}).status_code == 422
        assert (
            http.post("/v1/mqtt/acl", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )
