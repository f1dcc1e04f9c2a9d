"""Postgres fast paths for the bridge's batch writes.

Fixed statements with array parameters (``unnest``) instead of statements whose text grows with the
batch: Postgres plans them once and SQLAlchemy compiles nothing per batch. Messages go in by COPY.
Every value is a bound parameter; no SQL is built from data.
"""

from __future__ import annotations

from datetime import datetime
from operator import itemgetter
from typing import Any

import psycopg

ALREADY_STORED = """
    SELECT m.sender, m.client_msg_id, m.conversation_id, m.seq, m.stored_at
    FROM message_keys m JOIN unnest(%s::text[], %s::text[]) AS k(sender, id)
      ON m.sender = k.sender AND m.client_msg_id = k.id
"""
CREATE_CONVERSATIONS = """
    INSERT INTO conversations (id, kind, last_seq, created_at, updated_at)
    SELECT id, kind, 0, %s, %s FROM unnest(%s::text[], %s::text[]) AS c(id, kind)
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
"""
ADD_DM_MEMBERS = """
    INSERT INTO dm_members (conversation_id, user_name)
    SELECT * FROM unnest(%s::text[], %s::text[])
    ON CONFLICT DO NOTHING
"""
RESERVE_SEQS = """
    UPDATE conversations c SET last_seq = c.last_seq + v.n, updated_at = %s
    FROM (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS v(id, n) ORDER BY id) AS v
    WHERE c.id = v.id
    RETURNING c.id, c.last_seq
"""
COPY_COLUMNS = (
    "conversation_id",
    "seq",
    "sender",
    "client_msg_id",
    "body",
    "topic",
    "payload",
    "stored_at",
    "stream_pos",
    "attachments",
)
COPY_MESSAGES = f"COPY messages ({', '.join(COPY_COLUMNS)}) FROM STDIN"
KEY_COLUMNS = ("sender", "client_msg_id", "conversation_id", "seq", "stored_at")
COPY_KEYS = f"COPY message_keys ({', '.join(KEY_COLUMNS)}) FROM STDIN"
_COPY_VALUES = itemgetter(*COPY_COLUMNS)  # a row's values in column order, in C
_KEY_VALUES = itemgetter(*KEY_COLUMNS)


def already_stored(connection: psycopg.Connection[Any], keys: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """Rows (sender, id, conversation, seq, stored_at) of the keys already stored."""
    with connection.cursor() as cursor:
        cursor.execute(ALREADY_STORED, ([s for s, _ in keys], [i for _, i in keys]))
        return cursor.fetchall()


def reserve_seqs(
    connection: psycopg.Connection[Any],
    wanted: dict[str, tuple[str, int]],
    dm_members: list[tuple[str, str]],
    now: datetime,
) -> dict[str, int]:
    """Create missing conversations (and their DM members); add each count to its counter; return the new
    last seqs."""
    ids = sorted(wanted)
    with connection.cursor() as cursor:
        cursor.execute(CREATE_CONVERSATIONS, (now, now, ids, [wanted[i][0] for i in ids]))
        if dm_members:
            cursor.execute(ADD_DM_MEMBERS, ([c for c, _ in dm_members], [u for _, u in dm_members]))
        cursor.execute(RESERVE_SEQS, (now, ids, [wanted[i][1] for i in ids]))
        return {conversation: int(last) for conversation, last in cursor.fetchall()}


def copy_messages(connection: psycopg.Connection[Any], rows: list[dict[str, object]]) -> None:
    """The rows' keys into message_keys (where a duplicate fails), then the rows into messages."""
    with connection.cursor() as cursor:
        with cursor.copy(COPY_KEYS) as copy:
            for row in rows:
                copy.write_row(_KEY_VALUES(row))
        with cursor.copy(COPY_MESSAGES) as copy:
            for row in rows:
                copy.write_row(_COPY_VALUES(row))
