"""Stored messages as clients see them (history, sync, a conversation's last message), relations applied.

A relation is a message of its own (switchboard.relations) and is shown as one, with ``relates_to`` naming
its target by sender, client id and seq. Its target is shown as it is now: the newest text and
``edited_at`` after an edit; ``unsent`` with no body and no attachments after an unsend; and ``reactions``,
each emoji with the users who reacted with it (in the order they first did), reactions unsent since left
out. Two queries per call whatever the number of messages, none for the reactions of relations.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from switchboard.tables import Message


@dataclass(frozen=True, slots=True)
class RelationView:
    """What a relation names: its kind and its target's sender, client id and seq."""

    kind: str
    sender: str
    id: str
    seq: int


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as shown: ``body`` is None (and ``attachments`` empty) when it was unsent."""

    conversation: str
    seq: int
    sender: str
    id: str
    body: str | None
    stored_at: datetime
    attachments: list[str]
    relates_to: RelationView | None = None
    edited_at: datetime | None = None
    unsent: bool = False
    reactions: dict[str, list[str]] = field(default_factory=dict)


def views(session: Session | Connection, rows: Sequence[Any]) -> list[MessageView]:
    """``rows`` (``Message`` objects, or Core rows with the same columns) as clients see them, in the same
    order; ``session`` a Session or a Core connection."""
    if not rows:
        return []
    targets = _targets(session, rows)
    reactions = _reactions(session, rows)
    shown = []
    for row in rows:
        unsent = row.unsent_at is not None
        relation = None
        if row.relates_kind is not None and row.relates_to_seq is not None:
            sender, client_id = targets.get((row.conversation_id, row.relates_to_seq), ("", ""))
            relation = RelationView(row.relates_kind, sender, client_id, row.relates_to_seq)
        shown.append(
            MessageView(
                conversation=row.conversation_id,
                seq=row.seq,
                sender=row.sender,
                id=row.client_msg_id,
                body=None if unsent else row.body,
                stored_at=row.stored_at,
                attachments=[] if unsent else row.attachments.split(),
                relates_to=relation,
                edited_at=row.edited_at,
                unsent=unsent,
                reactions=reactions.get((row.conversation_id, row.seq), {}) if not unsent else {},
            )
        )
    return shown


def _by_conversation(pairs: set[tuple[str, int]], seq_column: Any) -> ColumnElement[bool]:
    """``(conversation_id, seq_column)`` in ``pairs``, one ``IN`` per conversation (indexes on both)."""
    seqs: dict[str, list[int]] = {}
    for conversation, seq in sorted(pairs):
        seqs.setdefault(conversation, []).append(seq)
    return or_(*(and_(col(Message.conversation_id) == c, seq_column.in_(s)) for c, s in seqs.items()))


def _targets(session: Session | Connection, rows: Sequence[Any]) -> dict[tuple[str, int], tuple[str, str]]:
    """The sender and client id of every message the relations among ``rows`` name."""
    wanted = {(row.conversation_id, row.relates_to_seq) for row in rows if row.relates_to_seq is not None}
    if not wanted:
        return {}
    found = session.execute(
        select(col(Message.conversation_id), col(Message.seq), col(Message.sender), col(Message.client_msg_id)).where(
            _by_conversation(wanted, col(Message.seq))
        )
    ).all()
    return {(conversation, seq): (sender, client_id) for conversation, seq, sender, client_id in found}


def _reactions(session: Session | Connection, rows: Sequence[Any]) -> dict[tuple[str, int], dict[str, list[str]]]:
    """The reactions (not unsent) to the plain messages and replies among ``rows``, by target."""
    wanted = {
        (row.conversation_id, row.seq) for row in rows if row.relates_kind in (None, "reply") and row.unsent_at is None
    }
    if not wanted:
        return {}
    # Each conversation's seqs among ``rows`` as one range (a page's are consecutive, or nearly), in a
    # statement built once per number of conversations with the ranges as bound parameters: neither built
    # nor compiled again per page (an IN list of every seq was both), and psycopg prepares it. Reactions
    # to seqs in a range that are not wanted (an unsent message, an edit) are dropped below.
    ranges: dict[str, tuple[int, int]] = {}
    for conversation, seq in wanted:
        low, high = ranges.get(conversation, (seq, seq))
        ranges[conversation] = (min(low, seq), max(high, seq))
    values: dict[str, Any] = {}
    for i, (conversation, (low, high)) in enumerate(sorted(ranges.items())):
        values.update({f"c{i}": conversation, f"low{i}": low, f"high{i}": high})
    found = session.execute(_reactions_statement(len(ranges)), values).all()
    reactions: dict[tuple[str, int], dict[str, list[str]]] = {}
    for conversation, seq, emoji, sender in found:
        target: tuple[str, int] = (conversation, seq)  # relates_to_seq: not null here
        if target not in wanted:
            continue
        senders = reactions.setdefault(target, {}).setdefault(emoji, [])
        if sender not in senders:
            senders.append(sender)
    return reactions


@functools.cache
def _reactions_statement(conversations: int) -> Any:
    """The reactions (not unsent) whose targets' seqs are in ranges ``low{i}``..``high{i}`` of conversations
    ``c{i}``, for ``conversations`` ranges, oldest reaction first."""
    target = col(Message.relates_to_seq)
    within = or_(
        *(
            and_(
                col(Message.conversation_id) == bindparam(f"c{i}"),
                target.between(bindparam(f"low{i}"), bindparam(f"high{i}")),
            )
            for i in range(conversations)
        )
    )
    return (
        select(col(Message.conversation_id), target, col(Message.body), col(Message.sender))
        .where(within, target.is_not(None), col(Message.relates_kind) == "reaction", col(Message.unsent_at).is_(None))
        .order_by(col(Message.seq))
    )
