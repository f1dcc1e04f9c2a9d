"""The messages table partitioned by month on Postgres (migration 0006, switchboard/partitions.py).

An existing database is migrated with its messages spread over three months: the rows land in their
months' partitions, keep their ids, and history and sync over HTTP still read them in order across the
partitions; the bridge goes on storing after them and still recognises a retry of an old message.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from bridge.store import Incoming, Stored, save_batch
from switchboard import accounts, partitions
from switchboard.db import make_engine, upgrade
from tests.conftest import create_database, drop_database
from tests.helpers import start_service, switchboard_env

CONVERSATION = "dm:alice:bob"
MONTHS = (datetime(2026, 7, 10, tzinfo=UTC), datetime(2026, 8, 20, tzinfo=UTC), datetime(2026, 9, 30, 23, tzinfo=UTC))
PER_MONTH = 10


@pytest.fixture
def old_database() -> Iterator[tuple[str, Engine]]:
    """A Postgres database at revision 0005 holding 30 messages of alice to bob, 10 in each of three months."""
    name = f"switchboard_parts_{secrets.token_hex(4)}"
    url = create_database(name)
    engine = make_engine(url)
    upgrade(engine, "0005")
    with Session(engine) as session:
        accounts.create_user(session, "alice", "pw-alice")
        accounts.create_user(session, "bob", "pw-bob")
        session.commit()
    total = PER_MONTH * len(MONTHS)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO conversations (id, kind, last_seq, created_at, updated_at) VALUES (:c, 'dm', :n, :t, :t)"
            ),
            {"c": CONVERSATION, "n": total, "t": MONTHS[0]},
        )
        connection.execute(
            text("INSERT INTO dm_members (conversation_id, user_name) VALUES (:c, 'alice'), (:c, 'bob')"),
            {"c": CONVERSATION},
        )
        rows = [
            {
                "c": CONVERSATION,
                "seq": seq,
                "id": f"old-{seq}",
                "body": f"message {seq}",
                "at": MONTHS[(seq - 1) // PER_MONTH] + timedelta(minutes=seq),
            }
            for seq in range(1, total + 1)
        ]
        connection.execute(
            text(
                "INSERT INTO messages (conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at,"
                " stream_pos) VALUES (:c, :seq, 'alice', :id, :body, 'dm/bob/alice', '\\x00', :at, :seq)"
            ),
            rows,
        )
        connection.execute(text("UPDATE stream_positions SET position = :n WHERE name = 'messages'"), {"n": total})
    yield url, engine
    engine.dispose()
    drop_database(name)


def _stored(engine: Engine) -> list[tuple[int, int, str, datetime, str]]:
    """(id, seq, client id, stored_at, partition) of every message, by seq."""
    with engine.connect() as connection:
        return [
            (row[0], row[1], row[2], row[3], row[4])
            for row in connection.execute(
                text(
                    "SELECT id, seq, client_msg_id, stored_at, tableoid::regclass::text FROM messages "
                    "WHERE conversation_id = :c ORDER BY seq"
                ),
                {"c": CONVERSATION},
            )
        ]


def test_migration_moves_messages_into_monthly_partitions_keeping_ids(old_database: tuple[str, Engine]) -> None:
    _, engine = old_database
    before = [(id_, seq, client, at) for id_, seq, client, at, _ in _stored(engine)]

    upgrade(engine)

    after = _stored(engine)
    assert [(id_, seq, client, at) for id_, seq, client, at, _ in after] == before
    assert [part for *_, part in after] == [f"messages_2026_{m:02d}" for m in (7, 8, 9) for _ in range(PER_MONTH)]
    with engine.connect() as connection:
        assert partitions.is_partitioned(connection)
        names = partitions.partitions(connection)
        keys = connection.execute(text("SELECT count(*) FROM message_keys")).scalar()
    now = partitions.month_start(datetime.now(UTC))
    assert partitions.partition_name(now) in names and "messages_default" in names
    assert partitions.partition_name(partitions.next_month(now)) in names  # ready before the month begins
    assert keys == len(before)

    # The bridge stores after them (new ids, seq going on) and recognises a retry of an old message.
    incoming = [
        Incoming("dm/bob/alice", b'{"id": "new-1", "body": "after the migration"}'),
        Incoming("dm/bob/alice", b'{"id": "old-3", "body": "a retry from July"}'),
    ]
    with Session(engine) as session:
        fresh, retry = save_batch(session, incoming)
        session.commit()
    assert isinstance(fresh, Stored) and isinstance(retry, Stored)
    assert (fresh.seq, fresh.duplicate) == (31, False)
    assert (retry.seq, retry.duplicate) == (3, True)
    newest = _stored(engine)[-1]
    assert newest[0] > max(id_ for id_, *_ in before)
    assert newest[4] == partitions.partition_name(datetime.now(UTC))


def test_history_and_sync_read_in_order_across_partitions(old_database: tuple[str, Engine], tmp_path: Path) -> None:
    url, engine = old_database
    upgrade(engine)
    api = start_service("api", env=switchboard_env(url), cwd=tmp_path)
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("bob", "pw-bob"), trust_env=False) as http:
            newest_first: list[int] = []
            page = http.get(f"/v1/conversations/{CONVERSATION}/messages", params={"limit": 7}).json()
            while page["messages"]:
                newest_first += [message["seq"] for message in page["messages"]]
                before = page["messages"][-1]["seq"]
                page = http.get(
                    f"/v1/conversations/{CONVERSATION}/messages", params={"limit": 7, "before": before}
                ).json()
            assert newest_first == list(range(30, 0, -1))

            oldest_first: list[int] = []
            after = 0
            while page := http.get(
                f"/v1/conversations/{CONVERSATION}/messages", params={"limit": 7, "after": after}
            ).json()["messages"]:
                oldest_first += [message["seq"] for message in page]
                after = page[-1]["seq"]
            assert oldest_first == list(range(1, 31))

            # A page that spans the August-September boundary, and one message from each month by seq.
            middle = http.get(f"/v1/conversations/{CONVERSATION}/messages", params={"limit": 4, "after": 18}).json()[
                "messages"
            ]
            assert [(m["seq"], m["id"]) for m in middle] == [
                (19, "old-19"),
                (20, "old-20"),
                (21, "old-21"),
                (22, "old-22"),
            ]
            for seq in (1, 15, 30):
                assert http.get(f"/v1/messages/{CONVERSATION}/{seq}").json()["id"] == f"old-{seq}"

            cursor = "v1.0.0.0"  # the beginning of every stream
            synced: list[int] = []
            while True:
                batch = http.get("/v1/sync", params={"since": cursor, "limit": 8}).json()
                synced += [message["seq"] for message in batch["messages"]]
                cursor = batch["next"]
                if not batch["more"]:
                    break
            assert synced == list(range(1, 31))
    finally:
        assert api.stop() == 0, api.output()


def test_partition_of_a_month_already_in_the_default_partition_is_skipped(
    old_database: tuple[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    _, engine = old_database
    upgrade(engine)
    far = datetime(2031, 3, 5, tzinfo=UTC)  # no partition yet: this row goes to messages_default
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO messages (conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at)"
                " VALUES (:c, 99, 'alice', 'future', 'x', 'dm/bob/alice', '\\x00', :at)"
            ),
            {"c": CONVERSATION, "at": far},
        )
    with engine.begin() as connection:
        created = partitions.ensure_message_partitions(connection, now=far)
    assert "messages_2031_03" not in created
    assert "messages_2031_04" in created and "messages_2031_05" in created
    assert "rows of that month are in messages_default already" in caplog.text
    assert [part for _, seq, _, _, part in _stored(engine) if seq == 99] == ["messages_default"]
