"""Stores a batch of MQTT messages: each valid message once, with a gapless ``seq`` per conversation.

:func:`save_batch` adds rows to the caller's session and never commits; the consumer commits the
whole batch and only then acknowledges the messages to the broker.

Per message the outcome is :class:`Stored` (new, or a repeat of an already stored ``(sender, id)``,
which keeps its original seq), :class:`Recorded` (a presence or receipt update, see
``bridge.watermarks``), :class:`Rejected` (kept in ``rejected_messages`` with the reason; a refused chat
message also carries the :class:`Notice` its sender gets on ``ack/{sender}``) or :class:`Replayed` (a
broker's retained copy of a chat message, not stored again).

A relation (reply, reaction, edit, unsend) is stored as a message with its own seq and applied to its
target in the same transaction (bridge.relating). A message may carry files its sender uploaded or
received in a conversation it belongs to (forwarding); the conversation it goes to is granted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import insert, select, tuple_
from sqlmodel import Session, col

from bridge import attachments, outbox, postgres, relating, sqlite
from switchboard import accounts, streams
from switchboard.payloads import ChatPayload, Rejection, claimed_id, parse_chat, parse_presence, parse_receipt
from switchboard.relations import Target
from switchboard.tables import (
    Message,
    MessageKey,
    RejectedMessage,
    utcnow,
)
from switchboard.topics import ChatTopic, Kind, parse_topic
from switchboard.watermarks import save_presence, save_receipt

MESSAGES = Message.__table__  # type: ignore[attr-defined]
MESSAGE_KEYS = MessageKey.__table__  # type: ignore[attr-defined]
REJECTED = RejectedMessage.__table__  # type: ignore[attr-defined]


class Received(Protocol):
    """What the store reads of a PUBLISH: the bridge's client's messages are stored as they come."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def retained(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    """One PUBLISH as the bridge received it (made by hand: tests, replays)."""

    topic: str
    payload: bytes
    retained: bool = False


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
class Notice:
    """Whom to tell that a chat message was refused: its sender, on ``ack/{sender}``, naming the message by
    its client id (None when the payload has none the client chose) and conversation."""

    sender: str
    client_msg_id: str | None
    conversation: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message kept in rejected_messages instead, with why (and, for a chat message, whom to tell)."""

    reason: str
    notice: Notice | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """A presence or receipt update, applied (or, when older than what is known, ignored)."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """A chat message delivered with the retain flag: a copy some broker kept (Switchboard's never keeps
    one; Mosquitto does when a client publishes with -r) and sends again each time the bridge subscribes.
    Messages published while the bridge's session exists come live, with retain=0 [MQTT-3.3.1-9], and
    were stored then; storing the copy again would duplicate a plain-text message under a new id."""


Outcome = Stored | Rejected | Recorded | Replayed


class _Valid:
    """A message that passed every check, with what is looked up several times per message made once."""

    __slots__ = ("conversation", "index", "key", "payload", "target", "topic")

    def __init__(self, index: int, topic: ChatTopic, payload: ChatPayload) -> None:
        self.index = index
        self.topic = topic
        self.payload = payload
        self.conversation = _conversation(topic)
        self.key = (topic.sender, payload.id)
        """``(sender, id)``."""
        self.target: Target | None = None
        """A relation's target, once found (bridge.relating)."""

    def refused(self, reason: str) -> Rejected:
        client_id = None if self.payload.server_made_id else self.payload.id
        return Rejected(reason, Notice(self.topic.sender, client_id, self.conversation))


#: Topics repeat (one per conversation and direction): each distinct one is parsed and checked once, and
#: its conversation named once. ChatTopic is frozen, so sharing one between messages is safe.
_parse_topic = lru_cache(maxsize=65_536)(parse_topic)


@lru_cache(maxsize=65_536)
def _conversation(topic: ChatTopic) -> str:
    return topic.conversation or ""


#: chat.edit_window_seconds' default, for callers (tests, tools) that do not pass their setting.
DEFAULT_EDIT_WINDOW = timedelta(hours=24)


def save_batch(
    session: Session,
    batch: Sequence[Received],
    *,
    preview_chars: int | None = None,
    edit_window: timedelta = DEFAULT_EDIT_WINDOW,
    online_ttl: float | None = None,
) -> list[Outcome]:
    """Add the batch's messages and rejections to ``session``; one outcome per input, in order.

    With ``preview_chars`` (notifications are on), also queue a notification for each recipient of a new
    message who is offline and has not muted its conversation, in the same transaction (not for edits and
    unsends). ``edit_window``: how old a message may be and still be edited (chat.edit_window_seconds)."""
    outcomes: dict[int, Outcome] = {}
    valid: list[_Valid] = []
    messages: dict[int, tuple[ChatTopic | None, bytes]] = {}
    for index, incoming in enumerate(batch):
        topic = _parse_topic(incoming.topic)
        if topic is not None and topic.kind in (Kind.PRESENCE, Kind.RECEIPT):
            outcomes[index] = _save_watermark(session, topic, incoming.payload)
        elif incoming.retained:
            outcomes[index] = Replayed()
        else:
            messages[index] = (topic, incoming.payload)
    checker = _ConversationChecker(session, messages)
    for index in messages:
        checked = checker.check(index)
        if isinstance(checked, Rejection):
            outcomes[index] = _rejected(checked.reason, *messages[index])
        else:
            valid.append(_Valid(index, *checked))

    known = _already_stored(session, valid, checker.stored)
    fresh: dict[tuple[str, str], _Valid] = {}
    for item in valid:
        if item.key not in known:
            fresh.setdefault(item.key, item)
    now = utcnow()
    for refuse in (
        lambda items: attachments.refused(session, items),
        lambda items: relating.resolve(session, items, now=now, edit_window=edit_window),
    ):
        refused = refuse(list(fresh.values()))
        if refused:
            for item in valid:
                if item.key in refused:
                    outcomes[item.index] = item.refused(refused[item.key])
                    fresh.pop(item.key, None)
            valid = [item for item in valid if item.key not in refused]
    known |= _insert_messages(session, batch, list(fresh.values()), now)
    relating.apply(session, list(fresh.values()), lambda key: known[key].seq, now)
    attachments.grant(session, list(fresh.values()), postgres=_postgres(session) is not None)
    if preview_chars is not None:
        new = [
            outbox.New(item.conversation, item.topic, known[item.key].seq, item.payload)
            for item in fresh.values()
            if item.payload.relates_to is None or item.payload.relates_to.kind in ("reply", "reaction")
        ]
        outbox.queue(session, new, preview_chars, online_ttl)
    for item in valid:
        first = known[item.key]
        is_first = item.key in fresh and fresh[item.key] is item
        outcomes[item.index] = first if is_first else replace(first, duplicate=True)
    _insert_rejections(session, batch, outcomes)
    return [outcomes[index] for index in range(len(batch))]


def rejection(reason: str, topic: str, raw: bytes) -> Rejected:
    """A PUBLISH refused as a whole (the database refused it, say): its sender is told when it was a chat
    message."""
    return _rejected(reason, _parse_topic(topic), raw)


def _rejected(reason: str, topic: ChatTopic | None, raw: bytes) -> Rejected:
    """A message refused before it was parsed whole: its sender is told when the topic names one."""
    if topic is None or topic.kind not in (Kind.DM, Kind.GROUP):
        return Rejected(reason)
    return Rejected(reason, Notice(topic.sender, claimed_id(raw), _conversation(topic)))


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
    """Validates topic, payload and conversation for a whole batch, with one query for the users and one
    for the group memberships it mentions. On Postgres these go in one round trip with the lookup of the
    keys already stored (of every parsed message: a superset of the valid ones), kept in ``stored``."""

    def __init__(self, session: Session, messages: dict[int, tuple[ChatTopic | None, bytes]]) -> None:
        self._parsed = {index: self._parse(topic, payload) for index, (topic, payload) in messages.items()}
        parsed = [p for p in self._parsed.values() if not isinstance(p, Rejection)]
        topics = [topic for topic, _ in parsed]
        names = {t.sender for t in topics} | {t.target for t in topics if t.kind is Kind.DM}
        groups = {(t.target, t.sender) for t in topics if t.kind is Kind.GROUP}
        self.stored: list[tuple[Any, ...]] | None = None
        """On Postgres, the rows (sender, id, conversation, seq, stored_at) of the parsed keys already stored."""
        raw = _postgres(session) if parsed else None
        if raw is not None:
            found = postgres.look_up(raw, names, groups, {(topic.sender, payload.id) for topic, payload in parsed})
            self._users, self._members, self.stored = found.users, found.members, found.stored
        else:
            self._users = accounts.existing_users(session, names)
            self._members = accounts.memberships(session, groups)

    @staticmethod
    def _parse(topic: ChatTopic | None, raw: bytes) -> tuple[ChatTopic, ChatPayload] | Rejection:
        if topic is None or topic.kind not in (Kind.DM, Kind.GROUP):
            return Rejection("not a message topic: use dm/{to}/{from} or group/{group}/{from}")
        payload = parse_chat(raw, topic.sender)
        return payload if isinstance(payload, Rejection) else (topic, payload)

    def check(self, index: int) -> tuple[ChatTopic, ChatPayload] | Rejection:
        parsed = self._parsed[index]
        if isinstance(parsed, Rejection):
            return parsed
        topic = parsed[0]
        if topic.sender not in self._users:
            return Rejection(f"unknown sender {topic.sender!r}")
        if topic.kind is Kind.DM and topic.target not in self._users:
            return Rejection(f"unknown conversation: user {topic.target!r} does not exist")
        if topic.kind is Kind.GROUP and (topic.target, topic.sender) not in self._members:
            return Rejection(f"unknown conversation: {topic.sender!r} is not a member of group {topic.target!r}")
        return parsed


def _already_stored(
    session: Session, valid: list[_Valid], found: list[tuple[Any, ...]] | None
) -> dict[tuple[str, str], Stored]:
    """The stored copies of any of these ``(sender, id)`` keys, marked as duplicates (``found``: the rows
    the checker read already, on Postgres)."""
    if not valid:
        return {}
    rows: Sequence[Sequence[Any]]
    if found is not None:
        rows = found
    else:
        keys = list({item.key for item in valid})
        rows = session.execute(
            select(
                col(MessageKey.sender),
                col(MessageKey.client_msg_id),
                col(MessageKey.conversation_id),
                col(MessageKey.seq),
                col(MessageKey.stored_at),
            ).where(tuple_(col(MessageKey.sender), col(MessageKey.client_msg_id)).in_(keys))
        ).all()
    return {
        (sender, msg_id): Stored(sender, msg_id, conversation, seq, stored_at, duplicate=True)
        for sender, msg_id, conversation, seq, stored_at in rows
    }


def _insert_messages(
    session: Session, batch: Sequence[Received], fresh: list[_Valid], now: datetime
) -> dict[tuple[str, str], Stored]:
    """Insert new messages with consecutive seqs per conversation, in batch order."""
    if not fresh:
        return {}
    by_conversation: dict[str, list[_Valid]] = {}
    for item in fresh:
        by_conversation.setdefault(item.conversation, []).append(item)
    stored: dict[tuple[str, str], Stored] = {}
    rows: list[tuple[int, dict[str, object]]] = []
    wanted = {c: (items[0].topic.kind, len(items)) for c, items in by_conversation.items()}
    last_seqs, last_position = _reserve(session, wanted, len(fresh))
    for conversation, items in by_conversation.items():
        last = last_seqs[conversation]
        for seq, item in enumerate(items, start=last - len(items) + 1):
            stored[item.key] = Stored(item.topic.sender, item.payload.id, conversation, seq, now)
            relation, target = item.payload.relates_to, item.target
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
                        "attachments": " ".join(item.payload.attachments),
                        "relates_kind": relation.kind if relation is not None else None,
                        "relates_to_seq": (
                            relating.target_seq(relation, target, lambda key: stored[key].seq)
                            if relation is not None and target is not None
                            else None
                        ),
                    },
                )
            )
    # Rows go in in arrival order, so ids and stream positions follow the order the bridge received them.
    ordered = [row for _, row in sorted(rows, key=lambda pair: pair[0])]
    for position, row in enumerate(ordered, start=last_position - len(ordered) + 1):
        row["stream_pos"] = position
    _write_messages(session, ordered)
    return stored


def _postgres(session: Session) -> Any:
    """The session's psycopg connection on Postgres (for the fast paths in bridge.postgres), else None."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return session.connection().connection.driver_connection


def _write_messages(session: Session, rows: list[dict[str, object]]) -> None:
    """The keys, then the messages: COPY on Postgres, a Core executemany INSERT elsewhere; never the ORM's
    bulk path. A concurrent duplicate from another bridge fails on message_keys' primary key, and the
    batch is retried."""
    raw = _postgres(session)
    if raw is not None:
        postgres.copy_messages(raw, rows)
    else:
        session.execute(insert(MESSAGE_KEYS), [{key: row[key] for key in postgres.KEY_COLUMNS} for row in rows])
        session.execute(insert(MESSAGES), rows)


def _reserve(session: Session, wanted: dict[str, tuple[Kind, int]], count: int) -> tuple[dict[str, int], int]:
    """Create missing conversation rows (and DM members), add each one's count to its counter, stamp its
    activity time, and take ``count`` positions of the messages stream; return the new last seqs and the last
    position taken.

    A fixed number of statements for the whole batch (one round trip on Postgres). The UPDATEs lock the rows
    (Postgres), so concurrent bridges serialise per conversation and seqs stay gapless; a deadlock between two
    bridges is retried.
    """
    now = utcnow()
    members = sorted(
        (conversation, name)
        for conversation, (kind, _) in wanted.items()
        if kind is Kind.DM
        for name in set(conversation.split(":")[1:])
    )
    kinds = {c: (str(kind), n) for c, (kind, n) in wanted.items()}
    raw = _postgres(session)
    if raw is not None:
        last_seqs, position = postgres.reserve(raw, kinds, members, now, (streams.MESSAGES, count))
        if position is None:  # a database created before the stream existed: start it
            position = streams.advance(session, streams.MESSAGES, count)
        return last_seqs, position
    return sqlite.reserve_seqs(session, kinds, members, now), streams.advance(session, streams.MESSAGES, count)


def _insert_rejections(session: Session, batch: Sequence[Received], outcomes: dict[int, Outcome]) -> None:
    now = utcnow()
    rows = [
        {"topic": batch[index].topic, "payload": batch[index].payload, "reason": outcome.reason, "received_at": now}
        for index, outcome in sorted(outcomes.items())
        if isinstance(outcome, Rejected)
    ]
    if rows:
        session.execute(insert(REJECTED), rows)
