"""Replies, reactions, edits, unsends and forwarding (issue 16 §2 and §5) through a real stack on Postgres and
SQLite, with paho and mosquitto_pub/sub: what recipients get live, what history, sync and the conversation
list show, and the refusal notice on ``ack/{sender}`` for each relation the server refuses."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from switchboard.tables import Role
from tests.conftest import Users, stack_users
from tests.helpers import MosquittoSub, PahoClient, Stack, chat_device, mosquitto_pub, start_stack, wait_for

User = tuple[str, str]


def _dm(a: str, b: str) -> str:
    return "dm:" + ":".join(sorted((a, b)))


def _publish(client: PahoClient, topic: str, message: dict[str, Any]) -> None:
    client.client.publish(topic, json.dumps(message), qos=1).wait_for_publish(20)


def _replies(client: PahoClient, user: str) -> list[dict[str, Any]]:
    return [json.loads(payload) for topic, payload, _, _ in client.messages if topic == f"ack/{user}"]


def _reply_for(client: PahoClient, user: str, message_id: str) -> dict[str, Any]:
    """The ack or refusal notice the bridge sent ``user`` for its message ``message_id``."""
    return wait_for(
        lambda: next((r for r in _replies(client, user) if r["id"] == message_id), None),
        what=f"the reply to {message_id} on ack/{user}",
    )


def _history(http: httpx.Client, conversation: str) -> list[dict[str, Any]]:
    answer = http.get(f"/v1/conversations/{conversation}/messages", params={"after": 0})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


def _sync(http: httpx.Client, since: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = http.get("/v1/sync", params={"since": since}).json()
        found += page["messages"]
        since = page["next"]
        if not page["more"]:
            return found


def _rel(kind: str, sender: str, target: str) -> dict[str, str]:
    return {"kind": kind, "sender": sender, "id": target}


def test_replies_reactions_edits_and_unsends_live_in_history_sync_and_the_list(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    team = users.group("team", [alice[0], bob[0], carol[0]])
    topic_of = {who[0]: f"group/{team}/{who[0]}" for who in (alice, bob, carol)}
    watcher = MosquittoSub(stack.mqtt_port, *carol, f"group/{team}/+")  # carol's phone: every payload live
    alice_phone = chat_device(stack, alice, f"ack/{alice[0]}")
    bob_phone = chat_device(stack, bob, f"ack/{bob[0]}")
    with stack.http(*carol) as http:
        start = http.get("/v1/sync").json()["next"]
    try:
        assert watcher.granted() == [1]
        sent: list[dict[str, Any]] = [
            {"id": "m1", "body": "helo all"},
            {"id": "e1", "body": "hello all", "relates_to": _rel("edit", alice[0], "m1")},
            {"id": "r1", "body": "👍", "relates_to": _rel("reaction", alice[0], "m1")},
            {"id": "p1", "body": "hi alice", "relates_to": _rel("reply", alice[0], "m1")},
            {"id": "m2", "body": "wrong chat"},
            {"id": "u1", "relates_to": _rel("unsend", alice[0], "m2")},
        ]
        senders = [alice, alice, bob, bob, alice, alice]
        for who, message in zip(senders, sent, strict=True):
            phone = alice_phone if who is alice else bob_phone
            _publish(phone, topic_of[who[0]], message)
            assert "seq" in _reply_for(phone, who[0], message["id"])  # stored, in order
        mosquitto_pub(
            stack.mqtt_port,
            *carol,
            topic_of[carol[0]],
            json.dumps({"id": "r2", "body": "👍", "relates_to": sent[2]["relates_to"]}),
        )
        # live: every relation reaches the other members as its sender published it
        live = [json.loads(payload) for _, payload in watcher.wait_messages(7)]
        assert live[:6] == sent and live[6]["relates_to"] == _rel("reaction", alice[0], "m1")

        with stack.http(*carol) as http:
            history = wait_for(lambda: len(page := _history(http, f"group:{team}")) == 7 and page, what="7 messages")
            by_id = {m["id"]: m for m in history}
            assert [m["seq"] for m in history] == list(range(1, 8))
            m1 = by_id["m1"]
            assert m1["body"] == "hello all" and m1["edited_at"] is not None and m1["relates_to"] is None
            assert m1["reactions"] == {"👍": [bob[0], carol[0]]}
            assert by_id["e1"]["relates_to"] == {"kind": "edit", "sender": alice[0], "id": "m1", "seq": 1}
            assert by_id["p1"]["relates_to"] == {"kind": "reply", "sender": alice[0], "id": "m1", "seq": 1}
            assert by_id["p1"]["body"] == "hi alice"
            m2 = by_id["m2"]
            assert (m2["unsent"], m2["body"], m2["attachments"], m2["reactions"]) == (True, None, [], {})
            assert by_id["u1"]["relates_to"] == {"kind": "unsend", "sender": alice[0], "id": "m2", "seq": 5}
            # the stored form matches what went live (relates_to as sent, plus the target's seq)
            for message in sent:
                shown = by_id[message["id"]]["relates_to"]
                assert (shown and {k: shown[k] for k in ("kind", "sender", "id")}) == message.get("relates_to")

            synced = _sync(http, start)
            assert [(m["seq"], m["id"]) for m in synced] == [(m["seq"], m["id"]) for m in history]
            assert [m["relates_to"] for m in synced] == [m["relates_to"] for m in history]
            assert {m["id"]: m["unsent"] for m in synced}["m2"] is True

            # the conversation list: its newest message (carol's reaction), the edited and unsent state applied
            listed = http.get("/v1/conversations").json()["conversations"]
            last = next(c for c in listed if c["id"] == f"group:{team}")["last_message"]
            assert last["id"] == "r2" and last["relates_to"]["seq"] == 1

        # an unsend of a reaction removes it; an edit as the newest message shows in the list
        _publish(bob_phone, topic_of[bob[0]], {"id": "u2", "relates_to": _rel("unsend", bob[0], "r1")})
        _reply_for(bob_phone, bob[0], "u2")
        _publish(
            alice_phone,
            topic_of[alice[0]],
            {"id": "e2", "body": "hello everyone", "relates_to": _rel("edit", alice[0], "m1")},
        )
        _reply_for(alice_phone, alice[0], "e2")
        with stack.http(*bob) as http:
            m1 = _history(http, f"group:{team}")[0]
            assert m1["reactions"] == {"👍": [carol[0]]} and m1["body"] == "hello everyone"
            last = next(c for c in http.get("/v1/conversations").json()["conversations"] if c["id"] == f"group:{team}")
            assert (
                last["last_message"]["body"] == "hello everyone"
                and last["last_message"]["relates_to"]["kind"] == "edit"
            )
    finally:
        watcher.close()
        alice_phone.close()
        bob_phone.close()


def test_relations_the_server_refuses_get_a_notice_and_are_not_stored(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    dm, other = _dm(alice[0], bob[0]), _dm(alice[0], carol[0])
    to_bob, to_alice = f"dm/{bob[0]}/{alice[0]}", f"dm/{alice[0]}/{bob[0]}"
    alice_phone = chat_device(stack, alice, f"ack/{alice[0]}")
    bob_phone = chat_device(stack, bob, f"ack/{bob[0]}")
    with stack.http(*bob) as http:
        start = http.get("/v1/sync").json()["next"]
    try:
        for topic, message in (
            (to_bob, {"id": "m1", "body": "hi"}),
            (f"dm/{carol[0]}/{alice[0]}", {"id": "c1", "body": "hi carol"}),
            (to_bob, {"id": "e1", "body": "hi!", "relates_to": _rel("edit", alice[0], "m1")}),
            (to_bob, {"id": "r1", "body": "🎉", "relates_to": _rel("reaction", alice[0], "m1")}),
        ):
            _publish(alice_phone, topic, message)
            assert "seq" in _reply_for(alice_phone, alice[0], message["id"])
        refused: list[tuple[PahoClient, str, str, dict[str, Any], str]] = [
            # the rules that need no database (the broker's door checks them too)
            (
                bob_phone,
                bob[0],
                to_alice,
                {"id": "x1", "body": "nice", "relates_to": _rel("reaction", alice[0], "m1")},
                "exactly one emoji",
            ),
            (
                bob_phone,
                bob[0],
                to_alice,
                {"id": "x2", "body": "hacked", "relates_to": _rel("edit", alice[0], "m1")},
                "only the sender of a message may edit it",
            ),
            (
                bob_phone,
                bob[0],
                to_alice,
                {"id": "x3", "relates_to": _rel("unsend", alice[0], "m1")},
                "only the sender of a message may unsend it",
            ),
            (
                alice_phone,
                alice[0],
                to_bob,
                {"id": "x4", "body": "oops", "relates_to": _rel("unsend", alice[0], "m1")},
                "an unsend carries no text",
            ),
            (
                alice_phone,
                alice[0],
                to_bob,
                {"id": "x5", "body": "x", "relates_to": {"kind": "like", "sender": alice[0], "id": "m1"}},
                "kind 'like' is unknown",
            ),
            # the rules that need the database (only the bridge checks them)
            (
                bob_phone,
                bob[0],
                to_alice,
                {"id": "x6", "body": "?", "relates_to": _rel("reply", alice[0], "nope")},
                "names no message 'nope'",
            ),
            (
                bob_phone,
                bob[0],
                to_alice,
                {"id": "x7", "body": "?", "relates_to": _rel("reply", alice[0], "c1")},
                "names no message 'c1'",
            ),
            (
                alice_phone,
                alice[0],
                to_bob,
                {"id": "x8", "body": "again", "relates_to": _rel("edit", alice[0], "e1")},
                "an edit cannot target an edit",
            ),
            (
                alice_phone,
                alice[0],
                to_bob,
                {"id": "x9", "body": "?", "relates_to": _rel("reply", alice[0], "r1")},
                "a reply cannot target a reaction",
            ),
        ]
        for phone, sender, topic, message, reason in refused:
            _publish(phone, topic, message)
            notice = _reply_for(phone, sender, message["id"])
            assert notice["conversation"] == dm and reason in notice["error"], (message, notice)
            assert set(notice) == {"id", "conversation", "error"}
        # a payload that is not even JSON: the notice names no id
        mosquitto_pub(stack.mqtt_port, *bob, to_alice, b'{"id": "x10", "body": ')
        broken = wait_for(
            lambda: next((r for r in _replies(bob_phone, bob[0]) if r["id"] is None), None), what="notice"
        )
        assert broken["conversation"] == dm and "invalid JSON" in broken["error"]

        with stack.http(*bob) as http:
            assert [m["id"] for m in _history(http, dm)] == ["m1", "e1", "r1"]
            assert [m["id"] for m in _sync(http, start)] == ["m1", "e1", "r1"]
        with stack.http(*carol) as http:
            assert [m["id"] for m in _history(http, other)] == ["c1"]
    finally:
        alice_phone.close()
        bob_phone.close()


@pytest.fixture(scope="module")
def strict_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack where nothing may be edited (chat.edit_window_seconds = 0)."""
    running = start_stack(database_url, tmp_path_factory.mktemp("strict"), SWITCHBOARD_CHAT__EDIT_WINDOW_SECONDS="0")
    yield running
    assert running.stop() == 0, running.output()


def test_an_edit_after_the_edit_window_is_refused(strict_stack: Stack) -> None:
    with stack_users(strict_stack) as users:
        alice, bob = users.user("alice"), users.user("bob")
    phone = chat_device(strict_stack, alice, f"ack/{alice[0]}")
    try:
        _publish(phone, f"dm/{bob[0]}/{alice[0]}", {"id": "m1", "body": "helo"})
        _reply_for(phone, alice[0], "m1")
        _publish(
            phone, f"dm/{bob[0]}/{alice[0]}", {"id": "e1", "body": "hello", "relates_to": _rel("edit", alice[0], "m1")}
        )
        notice = _reply_for(phone, alice[0], "e1")
        assert "too old to edit" in notice["error"] and "chat.edit_window_seconds" in notice["error"]
        with strict_stack.http(*bob) as http:
            [m1] = _history(http, _dm(alice[0], bob[0]))
            assert (m1["body"], m1["edited_at"]) == ("helo", None)
    finally:
        phone.close()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def test_forwarding_a_received_file_and_unsend_revoking_it(stack: Stack, users: Users) -> None:
    alice, bob, carol, mallory = (users.user(n) for n in ("alice", "bob", "carol", "mallory"))
    with stack.http(*alice) as http:
        photos = [
            http.post("/v1/media", files={"file": ("p.png", _png() + bytes([n]), "image/png")}).json()["media_id"]
            for n in range(2)
        ]
    kept, unsent = photos
    bob_phone = chat_device(stack, bob, f"ack/{bob[0]}")
    mallory_phone = chat_device(stack, mallory, f"ack/{mallory[0]}")
    inbox = MosquittoSub(stack.mqtt_port, *carol, f"dm/{carol[0]}/+")
    try:
        assert inbox.granted() == [1]
        for n, photo in enumerate(photos):
            mosquitto_pub(
                stack.mqtt_port,
                *alice,
                f"dm/{bob[0]}/{alice[0]}",
                json.dumps({"id": f"p{n}", "body": "", "attachments": [{"media_id": photo}]}),
            )
        with stack.http(*bob) as http:
            wait_for(lambda: len(_history(http, _dm(alice[0], bob[0]))) == 2, what="two photos")
            assert http.get(f"/v1/media/{unsent}").status_code == 200
        # bob forwards what he received, without uploading it again; carol gets it live and may read it
        forward = {"id": "f1", "body": "look", "attachments": [{"media_id": kept}]}
        _publish(bob_phone, f"dm/{carol[0]}/{bob[0]}", forward)
        assert "seq" in _reply_for(bob_phone, bob[0], "f1")
        assert json.loads(inbox.wait_messages(1)[0][1]) == forward
        with stack.http(*carol) as http:
            assert _history(http, _dm(bob[0], carol[0]))[0]["attachments"] == [kept]
            assert http.get(f"/v1/media/{kept}").status_code == 200
        # mallory never received it: refused with a notice
        _publish(
            mallory_phone, f"dm/{carol[0]}/{mallory[0]}", {"id": "f2", "body": "", "attachments": [{"media_id": kept}]}
        )
        assert "is not yours" in _reply_for(mallory_phone, mallory[0], "f2")["error"]
        # alice unsends the second photo: bob may no longer read it, nor forward it
        mosquitto_pub(
            stack.mqtt_port,
            *alice,
            f"dm/{bob[0]}/{alice[0]}",
            json.dumps({"id": "u1", "relates_to": _rel("unsend", alice[0], "p1")}),
        )
        with stack.http(*bob) as http:
            wait_for(lambda: http.get(f"/v1/media/{unsent}").status_code == 404, what="the grant revoked")
            assert http.get(f"/v1/media/{kept}").status_code == 200
            assert _history(http, _dm(alice[0], bob[0]))[1]["attachments"] == []
        _publish(bob_phone, f"dm/{carol[0]}/{bob[0]}", {"id": "f3", "body": "", "attachments": [{"media_id": unsent}]})
        assert "is not yours" in _reply_for(bob_phone, bob[0], "f3")["error"]
    finally:
        inbox.close()
        bob_phone.close()
        mallory_phone.close()


def test_unsend_through_rest_by_the_sender_or_an_admin(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    admin = users.user("admin", role=Role.ADMIN)
    team = users.group("team", [alice[0], bob[0], carol[0]])
    with stack.http(*carol) as http:
        start = http.get("/v1/sync").json()["next"]
    for who, message in (
        (bob, {"id": "b1", "body": "first"}),
        (bob, {"id": "b2", "body": "second"}),
        (bob, {"id": "e1", "body": "second!", "relates_to": _rel("edit", bob[0], "b2")}),
    ):
        mosquitto_pub(stack.mqtt_port, *who, f"group/{team}/{who[0]}", json.dumps(message))
    conversation = f"group:{team}"
    with stack.http(*carol) as carol_http, stack.http(*bob) as bob_http, stack.http(*admin) as admin_http:
        wait_for(lambda: len(_history(carol_http, conversation)) == 3, what="three messages")
        assert carol_http.delete(f"/v1/messages/{conversation}/1").status_code == 403  # not hers
        assert admin_http.delete(f"/v1/messages/{conversation}/9").status_code == 404
        assert bob_http.delete(f"/v1/messages/{conversation}/3").status_code == 409  # an edit
        assert bob_http.delete(f"/v1/messages/{conversation}/2").status_code == 204  # his own
        assert admin_http.delete(f"/v1/messages/{conversation}/1").status_code == 204  # not a member, an admin
        assert admin_http.delete(f"/v1/messages/{conversation}/1").status_code == 204  # again: no change
        history = _history(carol_http, conversation)
        assert [(m["seq"], m["unsent"], m["body"]) for m in history] == [
            (1, True, None),
            (2, True, None),
            (3, False, ""),  # the edit's text went with its target
            (4, False, ""),
            (5, False, ""),
        ]
        assert [(m["sender"], m["relates_to"]) for m in history[3:]] == [
            (bob[0], {"kind": "unsend", "sender": bob[0], "id": "b2", "seq": 2}),
            (admin[0], {"kind": "unsend", "sender": bob[0], "id": "b1", "seq": 1}),
        ]
        assert [m["seq"] for m in _sync(carol_http, start)] == [1, 2, 3, 4, 5]
