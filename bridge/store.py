"""Stores a batch of MQTT messages: each valid message once, with a gapless ``seq`` per conversation.

:func:`save_batch` adds rows to the caller's session and never commits; the consumer commits the
whole batch and only then acknowledges the messages to the broker.

Per message the outcome is :class:`Stored` (new, or a repeat of an already stored ``(sender, id)``,
which keeps its original seq), :class:`Recorded` (a presence or receipt update, see
``bridge.watermarks``) or :class:`Rejected` (kept in ``rejected_messages`` with the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bridge.watermarks import save_presence, save_receipt
from switchboard import accounts
from switchboard.payloads import ChatPayload, Rejection, parse_message, parse_presence, parse_receipt
from switchboard.tables import Conversation, Message, RejectedMessage, utcnow
from switchboard.topics import ChatTopic, Kind, parse_topic


@dataclass(frozen=True, slots=True)
class Incoming:
    """One PUBLISH as the bridge received it."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    """A message that is (now, or already was) in the messages table."""

    sender: str
    client_msg_id: str
    conversation: str
    seq: int
    stored_at: datetime
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message kept in rejected_messages instead, with why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """A presence or receipt update, applied (or, when older than what is known, ignored)."""


Outcome = Stored | Rejected | Recorded


@dataclass
class _Valid:
    index: int
    topic: ChatTopic
    payload: ChatPayload
    conversation: str = field(init=False)

    def __post_init__(self) -> None:
        self.conversation = self.topic.conversation or ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.topic.sender, self.payload.id)


def save_batch(session: Session, batch: Sequence[Incoming]) -> list[Outcome]:
    """Add the batch's messages and rejections to ``session``; one outcome per input, in order."""
    outcomes: dict[int, Outcome] = {}
    valid: list[_Valid] = []
    checker = _ConversationChecker(session)
    for index, incoming in enumerate(batch):
        topic = parse_topic(incoming.topic)
        if topic is not None and topic.kind in (Kind.PRESENCE, Kind.RECEIPT):
            outcomes[index] = _save_watermark(session, topic, incoming.payload)
            continue
        checked = checker.check(incoming)
        if isinstance(checked, Rejection):
            outcomes[index] = Rejected(checked.reason)
        else:
            valid.append(_Valid(index, *checked))

    known = _already_stored(session, valid)
    fresh: dict[tuple[str, str], _Valid] = {}
    for item in valid:
        if item.key not in known:
            fresh.setdefault(item.key, item)
    known |= _insert_messages(session, batch, list(fresh.values()))
    for item in valid:
        first = known[item.key]
        is_first = item.key in fresh and fresh[item.key] is item
        outcomes[item.index] = first if is_first else replace(first, duplicate=True)
    _insert_rejections(session, batch, outcomes)
    return [outcomes[index] for index in range(len(batch))]


def _save_watermark(session: Session, topic: ChatTopic, payload: bytes) -> Outcome:
    if topic.kind is Kind.PRESENCE:
        presence = parse_presence(payload, utcnow())
        if isinstance(presence, Rejection):
            return Rejected(presence.reason)
        if presence is not None:
            save_presence(session, topic.target, presence)
        return Recorded()
    receipt = parse_receipt(payload)
    if isinstance(receipt, Rejection):
        return Rejected(receipt.reason)
    refused = save_receipt(session, reader=topic.sender, sender=topic.target, receipt=receipt)
    return Rejected(refused.reason) if refused is not None else Recorded()


class _ConversationChecker:
    """Validates topic, payload and conversation, remembering lookups within one batch."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._users: dict[str, bool] = {}
        self._members: dict[tuple[str, str], bool] = {}

    def check(self, item: Incoming) -> tuple[ChatTopic, ChatPayload] | Rejection:
        topic = parse_topic(item.topic)
        if topic is None or topic.kind not in (Kind.DM, Kind.GROUP):
            return Rejection("not a message topic: use dm/{to}/{from} or group/{group}/{from}")
        payload = parse_message(item.payload)
        if isinstance(payload, Rejection):
            return payload
        if not self._user(topic.sender):
            return Rejection(f"unknown sender {topic.sender!r}")
        if topic.kind is Kind.DM and not self._user(topic.target):
            return Rejection(f"unknown conversation: user {topic.target!r} does not exist")
        if topic.kind is Kind.GROUP and not self._member(topic.target, topic.sender):
            return Rejection(f"unknown conversation: {topic.sender!r} is not a member of group {topic.target!r}")
        return topic, payload

    def _user(self, name: str) -> bool:
        if name not in self._users:
            self._users[name] = accounts.user_exists(self._session, name)
        return self._users[name]

    def _member(self, group: str, user: str) -> bool:
        if (group, user) not in self._members:
            self._members[(group, user)] = accounts.is_member(self._session, group, user)
        return self._members[(group, user)]


def _already_stored(session: Session, valid: list[_Valid]) -> dict[tuple[str, str], Stored]:
    """The stored copies of any of these ``(sender, id)`` keys, marked as duplicates."""
    if not valid:
        return {}
    keys = list({item.key for item in valid})
    rows = session.execute(
        select(
            col(Message.sender),
            col(Message.client_msg_id),
            col(Message.conversation_id),
            col(Message.seq),
            col(Message.stored_at),
        ).where(tuple_(col(Message.sender), col(Message.client_msg_id)).in_(keys))
    ).all()
    return {
        (sender, msg_id): Stored(sender, msg_id, conversation, seq, stored_at, duplicate=True)
        for sender, msg_id, conversation, seq, stored_at in rows
    }


def _insert_messages(session: Session, batch: Sequence[Incoming], fresh: list[_Valid]) -> dict[tuple[str, str], Stored]:
    """Insert new messages with consecutive seqs per conversation, in batch order."""
    if not fresh:
        return {}
    by_conversation: dict[str, list[_Valid]] = {}
    for item in fresh:
        by_conversation.setdefault(item.conversation, []).append(item)
    now = utcnow()
    stored: dict[tuple[str, str], Stored] = {}
    rows: list[tuple[int, dict[str, object]]] = []
    # Sorted, so two bridges writing the same conversations lock their rows in the same order.
    for conversation in sorted(by_conversation):
        items = by_conversation[conversation]
        last = _reserve_seqs(session, conversation, items[0].topic.kind, len(items))
        for seq, item in enumerate(items, start=last - len(items) + 1):
            stored[item.key] = Stored(item.topic.sender, item.payload.id, conversation, seq, now)
            rows.append(
                (
                    item.index,
                    {
                        "conversation_id": conversation,
                        "seq": seq,
                        "sender": item.topic.sender,
                        "client_msg_id": item.payload.id,
                        "body": item.payload.body,
                        "topic": batch[item.index].topic,
                        "payload": batch[item.index].payload,
                        "stored_at": now,
                    },
                )
            )
    # Rows go in in arrival order, so message ids follow the order the bridge received them.
    session.execute(insert(Message), [row for _, row in sorted(rows, key=lambda pair: pair[0])])
    return stored


def _reserve_seqs(session: Session, conversation: str, kind: Kind, count: int) -> int:
    """Make sure the conversation row exists, add ``count`` to its counter, return the new last seq."""
    dialect = session.get_bind().dialect.name
    make_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        make_insert(Conversation)
        .values(id=conversation, kind=str(kind), last_seq=0, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    result = session.execute(
        update(Conversation)
        .where(col(Conversation.id) == conversation)
        .values(last_seq=col(Conversation.last_seq) + count)
        .returning(col(Conversation.last_seq))
    )
    return int(result.scalar_one())


def _insert_rejections(session: Session, batch: Sequence[Incoming], outcomes: dict[int, Outcome]) -> None:
    now = utcnow()
    rows = [
        {"topic": batch[index].topic, "payload": batch[index].payload, "reason": outcome.reason, "received_at": now}
        for index, outcome in sorted(outcomes.items())
        if isinstance(outcome, Rejected)
    ]
    if rows:
        session.execute(insert(RejectedMessage), rows)
