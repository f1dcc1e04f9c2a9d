"""Postgres fast paths for the bridge's batch writes.

Fixed statements whose per-row values come in one JSON array parameter (``json_array_elements``) instead of
statements whose text grows with the batch: Postgres plans them once and SQLAlchemy compiles nothing per
batch. JSON rather than array parameters: ``json.dumps`` makes the text in C, where psycopg dumps a Python
list element by element (measured: 2,000 keys as two ``text[]`` took 13-16 ms a batch, as JSON 4-6 ms).
Messages go in by binary COPY. Every value is a bound parameter; no SQL is built from data.
"""

from __future__ import annotations

import json
from datetime import datetime
from operator import itemgetter
from typing import Any

import psycopg

ALREADY_STORED = """
    SELECT m.sender, m.client_msg_id, m.conversation_id, m.seq, m.stored_at
    FROM message_keys m JOIN (SELECT k->>0 AS sender, k->>1 AS id FROM json_array_elements(%s::json) AS k) AS k
      ON m.sender = k.sender AND m.client_msg_id = k.id
"""
CREATE_CONVERSATIONS = """
    INSERT INTO conversations (id, kind, last_seq, created_at, updated_at)
    SELECT c->>0, c->>1, 0, %s, %s FROM json_array_elements(%s::json) AS c
    ORDER BY 1
    ON CONFLICT (id) DO NOTHING
"""
ADD_DM_MEMBERS = """
    INSERT INTO dm_members (conversation_id, user_name)
    SELECT m->>0, m->>1 FROM json_array_elements(%s::json) AS m
    ON CONFLICT DO NOTHING
"""
RESERVE_SEQS = """
    UPDATE conversations c SET last_seq = c.last_seq + v.n, updated_at = %s
    FROM (SELECT v->>0 AS id, (v->>1)::bigint AS n FROM json_array_elements(%s::json) AS v ORDER BY 1) AS v
    WHERE c.id = v.id
    RETURNING c.id, c.last_seq
"""
#: The messages' columns the bridge writes, with their Postgres types: the COPYs are binary, so Postgres parses no
#: text and psycopg formats none (measured, 2,000-row batches: Postgres 16.0 -> 14.6 µs a row, the bridge's
#: Python 5.2 -> 2.0 µs a row, against text COPY).
COPY_TYPES = {
    "conversation_id": "varchar",
    "seq": "int8",
    "sender": "varchar",
    "client_msg_id": "varchar",
    "body": "text",
    "topic": "varchar",
    "payload": "bytea",
    "stored_at": "timestamptz",
    "stream_pos": "int8",
    "attachments": "text",
    "relates_kind": "varchar",
    "relates_to_seq": "int8",
}
COPY_COLUMNS = tuple(COPY_TYPES)
COPY_MESSAGES = f"COPY messages ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
KEY_COLUMNS = ("sender", "client_msg_id", "conversation_id", "seq", "stored_at")
COPY_KEYS = f"COPY message_keys ({', '.join(KEY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_VALUES = itemgetter(*COPY_COLUMNS)  # a row's values in column order, in C
_KEY_VALUES = itemgetter(*KEY_COLUMNS)


def already_stored(connection: psycopg.Connection[Any], keys: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """Rows (sender, id, conversation, seq, stored_at) of the keys already stored."""
    with connection.cursor() as cursor:
        cursor.execute(ALREADY_STORED, (json.dumps(keys),))
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
        cursor.execute(CREATE_CONVERSATIONS, (now, now, json.dumps([(i, wanted[i][0]) for i in ids])))
        if dm_members:
            cursor.execute(ADD_DM_MEMBERS, (json.dumps(dm_members),))
        cursor.execute(RESERVE_SEQS, (now, json.dumps([(i, wanted[i][1]) for i in ids])))
        return {conversation: int(last) for conversation, last in cursor.fetchall()}


def copy_messages(connection: psycopg.Connection[Any], rows: list[dict[str, object]]) -> None:
    """The rows' keys into message_keys (where a duplicate fails), then the rows into messages."""
    with connection.cursor() as cursor:
        with cursor.copy(COPY_KEYS) as copy:
            copy.set_types([COPY_TYPES[name] for name in KEY_COLUMNS])
            for row in rows:
                copy.write_row(_KEY_VALUES(row))
        with cursor.copy(COPY_MESSAGES) as copy:
            copy.set_types(list(COPY_TYPES.values()))
            for row in rows:
                copy.write_row(_COPY_VALUES(row))
