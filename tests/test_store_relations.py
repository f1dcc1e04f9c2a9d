"""bridge.store with relations (issue 16 §2), on Postgres and SQLite: each relation gets its own seq and is
applied to its target; the rules that need the database refuse with a notice for the sender; a target may
be earlier in the same batch; an edit comes within the edit window; an unsend erases and revokes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from bridge.store import Incoming, Notice, Outcome, Rejected, Stored, save_batch
from switchboard import message_views
from switchboard.db import session_scope
from switchboard.tables import Media, MediaGrant, Message
from tests.conftest import Users


def _msg(to: str, sender: str, msg_id: str, body: str = "x", kind: str = "dm", **extra: Any) -> Incoming:
    return Incoming(f"{kind}/{to}/{sender}", json.dumps({"id": msg_id, "body": body, **extra}).encode())


def _rel(kind: str, sender: str, target: str) -> dict[str, str]:
    return {"kind": kind, "sender": sender, "id": target}


def _save(engine: Engine, batch: list[Incoming], **options: Any) -> list[Outcome]:
    with session_scope(engine) as session:
        return save_batch(session, batch, **options)


def _history(engine: Engine, conversation: str) -> dict[int, message_views.MessageView]:
    with Session(engine) as session:
        rows = session.exec(select(Message).where(Message.conversation_id == conversation)).all()
        return {view.seq: view for view in message_views.views(session, rows)}


def test_relations_are_messages_applied_to_their_targets(engine: Engine, users: Users) -> None:
    (alice, _), (bob, _) = users.user("alice"), users.user("bob")
    conversation = f"dm:{min(alice, bob)}:{max(alice, bob)}"
    first = _save(engine, [_msg(bob, alice, "m1", "helo"), _msg(alice, bob, "b1", "hi")])
    outcomes = _save(
        engine,
        [
            _msg(bob, alice, "e1", "hello", relates_to=_rel("edit", alice, "m1")),
            _msg(alice, bob, "r1", "👍", relates_to=_rel("reaction", alice, "m1")),
            _msg(bob, alice, "r2", "👍", relates_to=_rel("reaction", alice, "m1")),
            _msg(bob, alice, "r3", "❤️", relates_to=_rel("reaction", alice, "m1")),
            _msg(bob, alice, "p1", "hi to you", relates_to=_rel("reply", bob, "b1")),
            _msg(alice, bob, "u1", "", relates_to=_rel("unsend", bob, "b1")),
            _msg(bob, alice, "u2", "", relates_to=_rel("unsend", alice, "r3")),
        ],
    )
    assert [o.seq for o in first + outcomes if isinstance(o, Stored)] == list(range(1, 10))
    shown = _history(engine, conversation)
    assert shown[1].body == "hello" and shown[1].edited_at is not None and not shown[1].unsent
    assert shown[1].reactions == {"👍": [bob, alice]}  # r3 was unsent
    assert shown[2].unsent and shown[2].body is None and shown[2].reactions == {}
    assert shown[3].relates_to == message_views.RelationView("edit", alice, "m1", 1) and shown[3].body == "hello"
    assert shown[7].relates_to == message_views.RelationView("reply", bob, "b1", 2) and shown[7].body == "hi to you"
    assert shown[8].relates_to == message_views.RelationView("unsend", bob, "b1", 2) and shown[8].body == ""
    assert shown[6].unsent and shown[6].relates_to is not None and shown[6].relates_to.kind == "reaction"


def test_a_relation_may_name_a_message_earlier_in_its_batch(engine: Engine, users: Users) -> None:
    (alice, _), (bob, _) = users.user("alice"), users.user("bob")
    outcomes = _save(
        engine,
        [
            _msg(bob, alice, "late", "x", relates_to=_rel("reaction", alice, "m1")),  # names a later message
            _msg(bob, alice, "m1", "typo"),
            _msg(bob, alice, "e1", "fixed", relates_to=_rel("edit", alice, "m1")),
            _msg(bob, alice, "u1", "", relates_to=_rel("unsend", alice, "m1")),
            _msg(alice, bob, "r1", "👍", relates_to=_rel("reaction", alice, "m1")),  # after the unsend
        ],
    )
    assert isinstance(outcomes[0], Rejected) and "exactly one emoji" in outcomes[0].reason
    assert [o.seq for o in outcomes[1:4] if isinstance(o, Stored)] == [1, 2, 3]
    assert outcomes[4] == Rejected("message 'm1' was unsent", Notice(bob, "r1", outcomes[1].conversation))  # type: ignore[union-attr]
    with Session(engine) as session:
        rows = session.exec(select(Message).where(Message.sender == alice).order_by(Message.seq)).all()
        assert [(r.seq, r.relates_kind, r.relates_to_seq, r.body) for r in rows] == [
            (1, None, None, ""),
            (2, "edit", 1, ""),  # an unsend erases its target's edits too
            (3, "unsend", 1, ""),
        ]


def test_relations_the_database_refuses_carry_a_notice(engine: Engine, users: Users) -> None:
    (alice, _), (bob, _), (carol, _) = users.user("alice"), users.user("bob"), users.user("carol")
    _save(engine, [_msg(bob, alice, "m1"), _msg(carol, alice, "c1"), _msg(bob, alice, "x1")])
    _save(engine, [_msg(bob, alice, "e1", "y", relates_to=_rel("edit", alice, "x1"))])
    _save(engine, [_msg(bob, alice, "r1", "🎉", relates_to=_rel("reaction", alice, "m1"))])
    cases = [
        (_rel("reply", alice, "nope"), "hi", "relates_to names no message 'nope'"),
        (_rel("reply", alice, "c1"), "hi", "relates_to names no message 'c1'"),  # in the alice-carol DM
        (_rel("edit", alice, "e1"), "z", "an edit cannot target an edit"),
        (_rel("reply", alice, "r1"), "z", "a reply cannot target a reaction"),
        (_rel("unsend", alice, "e1"), "", "an unsend cannot target an edit"),
    ]
    for n, (relation, body, reason) in enumerate(cases):
        [outcome] = _save(engine, [_msg(bob, alice, f"bad{n}", body, relates_to=relation)])
        assert isinstance(outcome, Rejected) and reason in outcome.reason, (relation, outcome)
        assert outcome.notice is not None and outcome.notice.client_msg_id == f"bad{n}"
        assert outcome.notice.sender == alice


def test_an_edit_comes_within_the_edit_window(engine: Engine, users: Users) -> None:
    (alice, _), (bob, _) = users.user("alice"), users.user("bob")
    _save(engine, [_msg(bob, alice, "m1")])
    [late] = _save(
        engine, [_msg(bob, alice, "e1", "y", relates_to=_rel("edit", alice, "m1"))], edit_window=timedelta(0)
    )
    assert isinstance(late, Rejected) and "too old to edit" in late.reason and "chat.edit_window_seconds" in late.reason
    [on_time] = _save(engine, [_msg(bob, alice, "e2", "y", relates_to=_rel("edit", alice, "m1"))])
    assert isinstance(on_time, Stored)


def _media(engine: Engine, uploader: str, media_id: str) -> None:
    with session_scope(engine) as session:
        session.add(
            Media(id=media_id, uploader=uploader, sha256=media_id.ljust(64, "0"), content_type="image/png", size=1)
        )


def _grants(engine: Engine, media_id: str) -> set[str]:
    with Session(engine) as session:
        return {g.conversation_id for g in session.exec(select(MediaGrant).where(MediaGrant.media_id == media_id))}


def test_forwarding_a_received_file_and_unsend_revoking_it(engine: Engine, users: Users) -> None:
    (alice, _), (bob, _), (carol, _) = users.user("alice"), users.user("bob"), users.user("carol")
    photo = f"photo-{users.suffix}"
    _media(engine, alice, photo)
    files = [{"media_id": photo}]
    [refused] = _save(engine, [_msg(carol, bob, "f0", attachments=files)])  # bob has not received it yet
    assert isinstance(refused, Rejected) and "is not yours" in refused.reason
    sent = _save(engine, [_msg(bob, alice, "p1", attachments=files), _msg(bob, alice, "p2", attachments=files)])
    [forwarded] = _save(engine, [_msg(carol, bob, "f1", "look", attachments=files)])
    assert isinstance(forwarded, Stored)
    ab, bc = sent[0].conversation, forwarded.conversation  # type: ignore[union-attr]
    assert _grants(engine, photo) == {ab, bc}
    _save(engine, [_msg(bob, alice, "u1", "", relates_to=_rel("unsend", alice, "p1"))])
    assert _grants(engine, photo) == {ab, bc}  # p2 still carries it in that conversation
    _save(engine, [_msg(bob, alice, "u2", "", relates_to=_rel("unsend", alice, "p2"))])
    assert _grants(engine, photo) == {bc}
    assert _history(engine, ab)[1].attachments == [] and _history(engine, bc)[1].attachments == [photo]
