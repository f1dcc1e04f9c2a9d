"""The notification outbox, written with the messages: one row per (offline recipient, new message).

A recipient is offline when the presence the broker last published for it is not "online" (the bridge
stores presence from ``presence/+``). A recipient who muted the conversation gets no row. The rows are
sent, batched per user, by :mod:`bridge.notifier`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlmodel import Session, col

from switchboard import presence
from switchboard.payloads import ChatPayload
from switchboard.tables import GroupMember, MutedConversation, Notification, Presence, utcnow
from switchboard.topics import ChatTopic, Kind

NOTIFICATIONS = Notification.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class New:
    """A message just stored."""

    conversation: str
    topic: ChatTopic
    seq: int
    payload: ChatPayload


def queue(session: Session, messages: list[New], preview_chars: int, online_ttl: float | None = None) -> None:
    """Add the outbox rows for ``messages`` to ``session`` (three queries for the whole batch)."""
    if not messages:
        return
    groups = sorted({m.topic.target for m in messages if m.topic.kind is Kind.GROUP})
    members: dict[str, list[str]] = {}
    if groups:
        query = select(col(GroupMember.group_name), col(GroupMember.user_name)).where(
            col(GroupMember.group_name).in_(groups)
        )
        for group, user in session.execute(query).all():
            members.setdefault(group, []).append(user)
    wanted: list[tuple[str, New]] = []
    for message in messages:
        sender, target = message.topic.sender, message.topic.target
        recipients = members.get(target, []) if message.topic.kind is Kind.GROUP else [target]
        wanted += [(user, message) for user in recipients if user != sender]
    if not wanted:
        return
    everyone = sorted({user for user, _ in wanted})
    online_query = select(col(Presence.user_name)).where(
        col(Presence.user_name).in_(everyone), col(Presence.status) == "online"
    )
    cutoff = presence.online_since(utcnow(), online_ttl)  # an "online" gone stale is offline
    if cutoff is not None:
        online_query = online_query.where(col(Presence.last_seen) >= cutoff)
    online = set(session.execute(online_query).scalars())
    muted = {
        (user, conversation)
        for user, conversation in session.execute(
            select(col(MutedConversation.user_name), col(MutedConversation.conversation_id)).where(
                col(MutedConversation.user_name).in_(everyone)
            )
        ).all()
    }
    now = utcnow()
    rows = [
        {
            "user_name": user,
            "conversation_id": message.conversation,
            "seq": message.seq,
            "sender": message.topic.sender,
            "preview": preview(message.payload, preview_chars),
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for user, message in wanted
        if user not in online and (user, message.conversation) not in muted
    ]
    if rows:
        session.execute(insert(NOTIFICATIONS), rows)


def preview(payload: ChatPayload, chars: int) -> str:
    """The start of the body; for a message of attachments only, how many."""
    if payload.body or not payload.attachments:
        return payload.body[:chars]
    count = len(payload.attachments)
    return f"[{count} attachment{'s' if count > 1 else ''}]"[:chars]
