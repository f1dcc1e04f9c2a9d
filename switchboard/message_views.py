"""Stored messages as clients see them (history, sync, a conversation's last message), relations applied.

A relation is a message of its own (switchboard.relations) and is shown as one, with ``relates_to`` naming
its target by sender, client id and seq. Its target is shown as it is now: the newest text and
``edited_at`` after an edit; ``unsent`` with no body and no attachments after an unsend; and ``reactions``,
each emoji with the users who reacted with it (in the order they first did), reactions unsent since left
out.

At most two queries per call whatever the number of messages, and none for a page read with :data:`COLUMNS`
that holds no relation and no message anyone reacted to (the usual page): one for the targets the relations
name, one for the reactions to the messages :data:`REACTED` marks (every message, for ``Message`` objects).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, or_, select
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


_reaction = Message.__table__.alias("reaction")  # type: ignore[attr-defined]
#: Whether some reaction (not unsent) names the message: a page without reactions asks no query for them.
REACTED = (
    exists()
    .where(
        _reaction.c.conversation_id == col(Message.conversation_id),
        _reaction.c.relates_to_seq == col(Message.seq),
        _reaction.c.relates_to_seq.is_not(None),  # the partial index's condition, for SQLite's planner
        _reaction.c.relates_kind == "reaction",
        _reaction.c.unsent_at.is_(None),
    )
    .label("reacted")
)
#: What a view shows of a stored message, in the order :func:`views_of_rows` reads it.
_STORED: tuple[Any, ...] = (
    col(Message.conversation_id),
    col(Message.seq),
    col(Message.sender),
    col(Message.client_msg_id),
    col(Message.body),
    col(Message.stored_at),
    col(Message.attachments),
    col(Message.relates_kind),
    col(Message.relates_to_seq),
    col(Message.edited_at),
    col(Message.unsent_at),
)
#: The columns :func:`views_of_rows` reads from each row, in this order: a Core select of them (any further
#: columns after) is the fast way in.
COLUMNS = (*_STORED, REACTED)
WIDTH = len(COLUMNS)
_stored_of = operator.attrgetter(*(column.key for column in _STORED))  # a Message's _STORED, as a tuple


def views(session: Session | Connection, messages: Sequence[Message]) -> list[MessageView]:
    """Stored messages (``Message`` objects) as clients see them, in the same order."""
    return views_of_rows(session, [(*_stored_of(m), True) for m in messages])  # reacted: not known, so ask


def views_of_rows(session: Session | Connection, rows: Sequence[Sequence[Any]]) -> list[MessageView]:
    """Rows whose first columns are :data:`COLUMNS` as clients see them, in the same order. Unpacked by
    position: a Core row's attributes by name cost several times more, per column, than the rest of a view."""
    if not rows:
        return []
    page = [row[:WIDTH] for row in rows]
    wanted = {(c, to_seq) for c, _, _, _, _, _, _, _, to_seq, _, _, _ in page if to_seq is not None}
    targets = _targets(session, wanted) if wanted else {}
    reacted = {
        (c, seq)
        for c, seq, _, _, _, _, _, kind, _, _, unsent_at, has in page
        if has and unsent_at is None and kind in (None, "reply")
    }
    reactions = _reactions(session, reacted) if reacted else {}
    shown = []
    for c, seq, sender, client_id, body, stored_at, attachments, kind, to_seq, edited_at, unsent_at, _ in page:
        unsent = unsent_at is not None
        relation = None
        if kind is not None and to_seq is not None:
            target_sender, target_id = targets.get((c, to_seq), ("", ""))
            relation = RelationView(kind, target_sender, target_id, to_seq)
        shown.append(
            MessageView(
                c,
                seq,
                sender,
                client_id,
                None if unsent else body,
                stored_at,
                [] if unsent else attachments.split(),
                relation,
                edited_at,
                unsent,
                {} if unsent else reactions.get((c, seq), {}),
            )
        )
    return shown


def _by_conversation(pairs: set[tuple[str, int]], seq_column: Any) -> ColumnElement[bool]:
    """``(conversation_id, seq_column)`` in ``pairs``, one ``IN`` per conversation (indexes on both)."""
    seqs: dict[str, list[int]] = {}
    for conversation, seq in sorted(pairs):
        seqs.setdefault(conversation, []).append(seq)
    return or_(*(and_(col(Message.conversation_id) == c, seq_column.in_(s)) for c, s in seqs.items()))


def _targets(session: Session | Connection, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """The sender and client id of each message in ``wanted`` (conversation, seq): what relations name."""
    found = session.execute(
        select(col(Message.conversation_id), col(Message.seq), col(Message.sender), col(Message.client_msg_id)).where(
            _by_conversation(wanted, col(Message.seq))
        )
    ).all()
    return {(conversation, seq): (sender, client_id) for conversation, seq, sender, client_id in found}


def _reactions(
    session: Session | Connection, wanted: set[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, list[str]]]:
    """The reactions (not unsent) to the messages in ``wanted`` (conversation, seq), by target."""
    # Each conversation's seqs as one range (a page's are consecutive, or nearly), in a statement built once
    # per number of conversations with the ranges as bound parameters: neither built nor compiled again per
    # page (an IN list of every seq was both), and psycopg prepares it. Reactions to seqs in a range that are
    # not wanted (an unsent message, an edit) are dropped below.
    seqs: dict[str, list[int]] = {}
    for conversation, seq in wanted:
        seqs.setdefault(conversation, []).append(seq)
    values: dict[str, Any] = {}
    for i, conversation in enumerate(sorted(seqs)):
        values.update({f"c{i}": conversation, f"low{i}": min(seqs[conversation]), f"high{i}": max(seqs[conversation])})
    found = session.execute(_reactions_statement(len(seqs)), values).all()
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
