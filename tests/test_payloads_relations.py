"""Relations in chat payloads (issue 16 §2): the shape of ``relates_to``, the rules the door checks without
a database (reaction = one emoji, edit/unsend only by the target's sender, unsend carries nothing), the
refusal notice on ``ack/{sender}``, and the emoji rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchboard.emoji import is_one_emoji
from switchboard.payloads import (
    ChatPayload,
    Rejection,
    Relation,
    claimed_id,
    parse_chat,
    parse_message,
    refusal_payload,
    relation_refusal,
)


def _payload(**fields: Any) -> bytes:
    return json.dumps({"id": "r1", "body": "", **fields}).encode()


def _rel(kind: str, sender: str = "alice", target: str = "m1") -> dict[str, str]:
    return {"kind": kind, "sender": sender, "id": target}


def test_relates_to_is_parsed() -> None:
    message = parse_message(_payload(body="me too", relates_to=_rel("reply", "bob")))
    assert message == ChatPayload("r1", "me too", relates_to=Relation("reply", "bob", "m1"))
    assert parse_message(_payload(body="x", relates_to=None)) == ChatPayload("r1", "x")
    assert parse_message(_payload(body="x")) == ChatPayload("r1", "x")


def test_an_unsend_may_leave_out_its_body() -> None:
    message = parse_message(json.dumps({"id": "u1", "relates_to": _rel("unsend")}).encode())
    assert message == ChatPayload("u1", "", relates_to=Relation("unsend", "alice", "m1"))
    assert isinstance(parse_message(json.dumps({"id": "e1", "relates_to": _rel("edit")}).encode()), Rejection)


@pytest.mark.parametrize(
    ("relates_to", "reason"),
    [
        ("m1", '"relates_to" must be {"kind"'),
        ([], '"relates_to" must be {"kind"'),
        ({"sender": "bob", "id": "m1"}, "kind None is unknown"),
        (_rel("like"), "kind 'like' is unknown"),
        ({"kind": "reply", "id": "m1"}, 'needs "sender"'),
        (_rel("reply", "bad name"), 'needs "sender"'),
        ({"kind": "reply", "sender": "bob"}, 'needs "id"'),
        (_rel("reply", "bob", ""), 'needs "id"'),
        (_rel("reply", "bob", "x" * 65), "1 to 64 characters"),
        ({"kind": "reply", "sender": "bob", "id": 7}, 'needs "id"'),
    ],
)
def test_bad_relates_to_shapes_say_what_is_wrong(relates_to: Any, reason: str) -> None:
    rejected = parse_message(_payload(body="x", relates_to=relates_to))
    assert isinstance(rejected, Rejection) and reason in rejected.reason, rejected


@pytest.mark.parametrize(
    ("fields", "publisher", "reason"),
    [
        ({"body": "nice", "relates_to": _rel("reaction", "bob")}, "alice", "exactly one emoji"),
        ({"body": "👍👍", "relates_to": _rel("reaction", "bob")}, "alice", "exactly one emoji"),
        ({"body": "", "relates_to": _rel("reaction", "bob")}, "alice", "exactly one emoji"),
        (
            {"body": "👍", "relates_to": _rel("reaction", "bob"), "attachments": [{"media_id": "a"}]},
            "alice",
            "cannot carry attachments",
        ),
        ({"body": "fixed", "relates_to": _rel("edit", "bob")}, "alice", "only the sender of a message may edit"),
        ({"body": "", "relates_to": _rel("unsend", "bob")}, "alice", "only the sender of a message may unsend"),
        ({"body": "oops", "relates_to": _rel("unsend", "alice")}, "alice", "an unsend carries no text"),
        (
            {"body": "x", "relates_to": _rel("edit", "alice"), "attachments": [{"media_id": "a"}]},
            "alice",
            "cannot carry attachments",
        ),
        ({"body": "x", "relates_to": _rel("reply", "alice", "r1")}, "alice", "cannot relate to itself"),
    ],
)
def test_relation_rules_without_a_database(fields: dict[str, Any], publisher: str, reason: str) -> None:
    message = parse_message(_payload(**fields))
    assert isinstance(message, ChatPayload)
    refusal = relation_refusal(message, publisher)
    assert refusal is not None and reason in refusal.reason, refusal
    assert parse_chat(_payload(**fields), publisher) == refusal


@pytest.mark.parametrize(
    ("fields", "publisher"),
    [
        ({"body": "x"}, "alice"),
        ({"body": "me too", "relates_to": _rel("reply", "bob"), "attachments": [{"media_id": "a"}]}, "alice"),
        ({"body": "yes", "relates_to": _rel("reply", "alice", "m0")}, "alice"),  # reply to oneself
        ({"body": "👍🏽", "relates_to": _rel("reaction", "bob")}, "alice"),
        ({"body": "❤️", "relates_to": _rel("reaction", "alice")}, "alice"),  # react to one's own message
        ({"body": "fixed", "relates_to": _rel("edit", "alice")}, "alice"),
        ({"body": "", "relates_to": _rel("edit", "alice")}, "alice"),  # a caption removed
        ({"body": "", "relates_to": _rel("unsend", "alice")}, "alice"),
    ],
)
def test_relations_that_pass_the_door(fields: dict[str, Any], publisher: str) -> None:
    message = parse_chat(_payload(**fields), publisher)
    assert isinstance(message, ChatPayload), message


def test_a_refusal_notice_names_the_client_id_the_conversation_and_the_reason() -> None:
    notice = json.loads(refusal_payload("m7", "dm:alice:bob", "a reaction's body must be exactly one emoji"))
    assert notice == {
        "id": "m7",
        "conversation": "dm:alice:bob",
        "error": "a reaction's body must be exactly one emoji",
    }
    assert json.loads(refusal_payload(None, "group:team", "invalid JSON"))["id"] is None


def test_the_id_a_refused_payload_claims() -> None:
    assert claimed_id(b'{"id": "m1", "body": 5}') == "m1"
    assert claimed_id(b"plain text") is None
    assert claimed_id(b'{"id": "m1"') is None
    assert claimed_id(b'{"id": 5}') is None
    assert claimed_id(json.dumps({"id": "x" * 65}).encode()) is None
    assert claimed_id(b"\xff") is None
    assert claimed_id(b"[" * 100_000) is None


@pytest.mark.parametrize("emoji", ["👍", "❤️", "👍🏽", "🇫🇷", "1️⃣", "#⃣", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "\U0001fae8"])
def test_one_emoji(emoji: str) -> None:
    assert is_one_emoji(emoji)


@pytest.mark.parametrize(
    "text", ["", "a", "ok", "1", "👍👍", "👍 ", " 👍", "🇫", "🇫🇷🇫", "🏽", "👍\u200d", "\u200d👍", "🏴󠁧󠁢"]
)
def test_not_one_emoji(text: str) -> None:
    assert not is_one_emoji(text)
