"""Presence and receipts: last-seen per user, and per-user, per-conversation watermarks (written by the
bridge from MQTT, and by the API for POST .../read).

Both only move forward: an older presence message, or a receipt for less than what is already
recorded, changes nothing. The caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from switchboard import accounts, streams
from switchboard.payloads import PresencePayload, ReceiptPayload, Rejection
from switchboard.tables import Conversation, Presence, Receipt, utcnow
from switchboard.topics import parse_conversation


def _insert(session: Session, table: type) -> object:
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def save_presence(session: Session, user: str, presence: PresencePayload) -> None:
    """Record the user's presence unless a newer one is already recorded."""
    statement = _insert(session, Presence).values(  # type: ignore[attr-defined]
        user_name=user, status=presence.status, last_seen=presence.at
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["user_name"],
            set_={"status": statement.excluded.status, "last_seen": statement.excluded.last_seen},
            where=Presence.__table__.c.last_seen <= statement.excluded.last_seen,  # type: ignore[attr-defined]
        )
    )


def save_receipt(session: Session, reader: str, sender: str, receipt: ReceiptPayload) -> Rejection | None:
    """Move ``reader``'s watermarks in the conversation forward; a Rejection says why not."""
    conversation = parse_conversation(receipt.conversation)
    if conversation is None:
        return Rejection(f"unknown conversation {receipt.conversation!r}")
    for name in {reader, sender}:
        if not accounts.may_read(session, name, conversation):
            return Rejection(f"{name!r} is not part of {receipt.conversation!r}")
    row = session.get(Conversation, receipt.conversation)
    last = row.last_seq if row is not None else 0
    up_to = min(receipt.up_to_seq, last)
    read = up_to if receipt.status == "read" else 0
    _upsert_receipt(session, reader, receipt.conversation, delivered=up_to, read=read, now=utcnow())
    return None


def _upsert_receipt(
    session: Session, user: str, conversation: str, *, delivered: int, read: int, now: datetime
) -> None:
    table = Receipt.__table__  # type: ignore[attr-defined]
    statement = _insert(session, Receipt).values(  # type: ignore[attr-defined]
        user_name=user,
        conversation_id=conversation,
        delivered_seq=max(delivered, read),
        read_seq=read,
        updated_at=now,
    )
    new = statement.excluded
    position = streams.advance(session, streams.RECEIPTS)
    statement = statement.values(stream_pos=position)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["user_name", "conversation_id"],
            set_={
                "delivered_seq": case(
                    (new.delivered_seq > table.c.delivered_seq, new.delivered_seq), else_=table.c.delivered_seq
                ),
                "read_seq": case((new.read_seq > table.c.read_seq, new.read_seq), else_=table.c.read_seq),
                "updated_at": new.updated_at,
                "stream_pos": new.stream_pos,
            },
        )
    )
