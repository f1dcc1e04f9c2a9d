"""bridge.store on Postgres and SQLite: gapless seq, idempotency on (sender, id), rejections with reasons."""

from __future__ import annotations

import json

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bridge.store import Incoming, Recorded, Rejected, Replayed, Stored, save_batch
from switchboard.db import session_scope
from switchboard.tables import Message, RejectedMessage
from tests.conftest import Users


def _msg(to: str, sender: str, msg_id: str, body: str = "x", kind: str = "dm") -> Incoming:
    return Incoming(f"{kind}/{to}/{sender}", json.dumps({"id": msg_id, "body": body}).encode())


def _save(engine: Engine, batch: list[Incoming]) -> list[Stored | Rejected]:
    with session_scope(engine) as session:
        return save_batch(session, batch)


def test_seq_is_gapless_per_conversation_in_publish_order(engine: Engine, users: Users) -> None:
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    carol, _ = users.user("carol")
    group = users.group("g", [alice, bob])
    first = _save(
        engine,
        [
            _msg(bob, alice, "a1"),
            _msg(carol, alice, "c1"),
            _msg(group, bob, "g1", kind="group"),
            _msg(alice, bob, "b1"),
        ],
    )
    second = _save(engine, [_msg(bob, alice, "a2"), _msg(group, alice, "g2", kind="group"), _msg(carol, alice, "c2")])
    seqs = [(o.conversation.split(":")[0], o.client_msg_id, o.seq) for o in first + second if isinstance(o, Stored)]
    assert seqs == [
        ("dm", "a1", 1),
        ("dm", "c1", 1),
        ("group", "g1", 1),
        ("dm", "b1", 2),
        ("dm", "a2", 3),
        ("group", "g2", 2),
        ("dm", "c2", 2),
    ]
    with Session(engine) as session:
        rows = session.exec(select(Message).where(Message.sender == alice).order_by(col(Message.id))).all()
    assert [r.client_msg_id for r in rows] == ["a1", "c1", "a2", "g2", "c2"]


def test_same_sender_and_id_is_stored_once_within_and_across_batches(engine: Engine, users: Users) -> None:
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    first = _save(engine, [_msg(bob, alice, "m1", "one"), _msg(bob, alice, "m1", "one again")])
    second = _save(engine, [_msg(bob, alice, "m1", "retry"), _msg(bob, alice, "m2")])
    assert [(o.seq, o.duplicate) for o in first + second if isinstance(o, Stored)] == [
        (1, False),
        (1, True),
        (1, True),
        (2, False),
    ]
    with Session(engine) as session:
        bodies = session.exec(select(Message.body).where(Message.sender == alice).order_by(col(Message.seq))).all()
    assert list(bodies) == ["one", "x"]


def test_rejections_are_kept_with_reasons_and_do_not_block_the_batch(engine: Engine, users: Users) -> None:
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    mallory, _ = users.user("mallory")
    group = users.group("g", [alice])
    outcomes = _save(
        engine,
        [
            _msg(f"nobody-{users.suffix}", alice, "r1"),
            _msg(group, mallory, "r2", kind="group"),
            Incoming(f"ack/{alice}", b"{}"),
            Incoming(f"dm/{bob}/{alice}", b"\x00\xff"),
            _msg(bob, alice, "ok"),
        ],
    )
    reasons = [o.reason for o in outcomes if isinstance(o, Rejected)]
    assert "does not exist" in reasons[0]
    assert "not a member" in reasons[1]
    assert "not a message topic" in reasons[2]
    assert "not UTF-8" in reasons[3]
    assert isinstance(outcomes[4], Stored) and outcomes[4].seq == 1
    with Session(engine) as session:
        kept = session.exec(select(RejectedMessage).where(col(RejectedMessage.topic).contains(users.suffix))).all()
    assert len(kept) == 4 and all(r.reason for r in kept)


def test_a_brokers_retained_copy_of_a_chat_message_is_not_stored_again(engine: Engine, users: Users) -> None:
    """A message delivered with the retain flag is a broker's kept copy, sent again at each subscription
    (Mosquitto); the live copy was stored, and plain text would get a new id each time. Retained presence
    is still recorded (it is the current state)."""
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    outcomes = _save(
        engine,
        [
            Incoming(f"dm/{bob}/{alice}", b"hello again", retained=True),
            Incoming(f"presence/{alice}", b'{"status": "offline"}', retained=True),
        ],
    )
    assert outcomes == [Replayed(), Recorded()]
    with Session(engine) as session:
        assert session.exec(select(Message).where(Message.sender == alice)).all() == []
