"""bridge.postgres: the bridge's batch statements on Postgres, pipelined and by binary COPY.

Two bridges (or a bridge and its own retry) may store the same ``(sender, id)`` at once: the second to commit
gets a :class:`~switchboard.errors.StoreError` marked as a conflict (psycopg's own error never leaves the
store), and trying again finds the first one's row, with its seq. A batch's rows are stored with every
column as sent (binary COPY), and a mixed batch of new messages, repeats, relations and refusals gets the
same outcomes and stream positions as before.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from bridge.store import Incoming, Rejected, Stored, save_batch
from switchboard.db import make_engine, session_scope
from switchboard.errors import StoreError
from tests.conftest import Users


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def _msg(to: str, sender: str, msg_id: str, body: str = "x", **extra: object) -> Incoming:
    return Incoming(f"dm/{to}/{sender}", json.dumps({"id": msg_id, "body": body, **extra}).encode())


def _wait_for_lock_wait(engine: Engine, timeout: float = 30) -> None:
    """Wait until some other session of this database waits for a lock."""
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("no session waited for a lock")


def test_a_key_another_transaction_commits_first_is_a_conflict_then_a_duplicate_with_its_seq(
    pg_engine: Engine,
) -> None:
    users = Users(pg_engine)
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    message = _msg(bob, alice, "same")
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope(pg_engine) as session:
                save_batch(session, [message])
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    with Session(pg_engine, expire_on_commit=False) as first:
        [stored] = save_batch(first, [message])
        other = threading.Thread(target=second)
        other.start()
        _wait_for_lock_wait(pg_engine)  # the second waits for the first's conversation row
        first.commit()
    other.join(timeout=60)
    assert not other.is_alive()
    [error] = errors
    assert isinstance(error, StoreError)
    assert error.conflict and not error.retryable
    with session_scope(pg_engine) as session:
        [again] = save_batch(session, [message])
    assert isinstance(stored, Stored) and isinstance(again, Stored)
    assert again.duplicate and (again.conversation, again.seq) == (stored.conversation, stored.seq)
    with pg_engine.connect() as connection:
        seqs = connection.execute(
            text("SELECT seq FROM messages WHERE conversation_id = :c ORDER BY seq"), {"c": stored.conversation}
        ).scalars()
        assert list(seqs) == [stored.seq]


def test_a_mixed_batch_is_stored_column_for_column_with_its_stream_positions(pg_engine: Engine) -> None:
    users = Users(pg_engine)
    alice, _ = users.user("alice")
    bob, _ = users.user("bob")
    group = users.group("g", [alice, bob])
    with session_scope(pg_engine) as session:
        [earlier] = save_batch(session, [_msg(bob, alice, "earlier")])
    assert isinstance(earlier, Stored)
    with pg_engine.connect() as connection:
        head = connection.execute(text("SELECT position FROM stream_positions WHERE name = 'messages'")).scalar_one()
    body = "héllo\\ \t\n'\"" + "x" * 300
    batch = [
        _msg(bob, alice, "plain", body),
        _msg(bob, alice, "earlier"),  # stored before: a duplicate
        Incoming(f"group/{group}/{bob}", json.dumps({"id": "in-group", "body": "to the group"}).encode()),
        _msg(alice, bob, "reply", "re", relates_to={"kind": "reply", "sender": alice, "id": "plain"}),
        _msg(bob, "nobody-at-all", "refused"),
        _msg(bob, alice, "plain", "the same id again in the batch"),
    ]
    with session_scope(pg_engine) as session:
        outcomes = save_batch(session, batch)
    plain, duplicate, in_group, reply, refused, repeat = outcomes
    assert isinstance(plain, Stored) and not plain.duplicate
    assert isinstance(duplicate, Stored) and duplicate.duplicate and duplicate.seq == earlier.seq
    assert isinstance(in_group, Stored) and in_group.conversation == f"group:{group}"
    assert isinstance(reply, Stored) and not reply.duplicate
    assert isinstance(refused, Rejected) and "unknown sender" in refused.reason
    assert isinstance(repeat, Stored) and repeat.duplicate and repeat.seq == plain.seq
    with pg_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT client_msg_id, conversation_id, seq, sender, body, topic, payload, stored_at, stream_pos, "
                "attachments, relates_kind, relates_to_seq FROM messages WHERE stream_pos > :head ORDER BY stream_pos"
            ),
            {"head": head},
        ).all()
    assert [row.client_msg_id for row in rows] == ["plain", "in-group", "reply"]
    assert [row.stream_pos for row in rows] == [head + 1, head + 2, head + 3]
    first = rows[0]
    assert (first.conversation_id, first.seq, first.sender, first.body) == (plain.conversation, plain.seq, alice, body)
    assert (first.topic, bytes(first.payload)) == (batch[0].topic, batch[0].payload)
    assert first.stored_at == plain.stored_at and first.attachments == ""
    assert (first.relates_kind, first.relates_to_seq) == (None, None)
    assert (rows[2].relates_kind, rows[2].relates_to_seq) == ("reply", plain.seq)
    assert rows[2].seq == plain.seq + 1  # one DM conversation between alice and bob, gapless
