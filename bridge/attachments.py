"""The files a new message carries: may its sender send them, and who may read them once it is stored.

A sender may attach a file it uploaded (``POST /v1/media``) or one it received in a conversation it belongs
to (forwarding, issue 16 §5: no second upload). Once the message is stored, the conversation it went to is
granted the file (a :class:`~switchboard.tables.MediaGrant`); an unsend takes the grant back
(switchboard.relations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from switchboard import accounts
from switchboard.payloads import ChatPayload
from switchboard.tables import Media, MediaGrant
from switchboard.topics import ChatTopic

MEDIA_GRANTS = MediaGrant.__table__  # type: ignore[attr-defined]


class Item(Protocol):
    """A new message of the batch, as bridge.store holds it."""

    @property
    def key(self) -> tuple[str, str]: ...
    @property
    def topic(self) -> ChatTopic: ...
    @property
    def conversation(self) -> str: ...
    @property
    def payload(self) -> ChatPayload: ...


def refused(session: Session, items: Sequence[Item]) -> dict[tuple[str, str], str]:
    """Why each message that names a missing media file, or one its sender neither uploaded nor received in a
    conversation it belongs to, cannot be stored (one query; one more per sender that forwards a file)."""
    wanted = {media_id for item in items for media_id in item.payload.attachments}
    if not wanted:
        return {}
    owners = dict(session.execute(select(col(Media.id), col(Media.uploader)).where(col(Media.id).in_(wanted))).all())
    forwarded: dict[str, set[str]] = {}
    for item in items:
        for media_id in item.payload.attachments:
            if owners.get(media_id) not in (None, item.topic.sender):
                forwarded.setdefault(item.topic.sender, set()).add(media_id)
    received = {
        (sender, media_id)
        for sender, media_ids in forwarded.items()
        for media_id in session.execute(
            select(col(MediaGrant.media_id)).where(
                col(MediaGrant.media_id).in_(sorted(media_ids)),
                col(MediaGrant.conversation_id).in_(accounts.readable_conversation_ids(sender)),
            )
        ).scalars()
    }
    refused: dict[tuple[str, str], str] = {}
    for item in items:
        for media_id in item.payload.attachments:
            owner = owners.get(media_id)
            if owner is None:
                refused[item.key] = f"attachment {media_id!r} does not exist: upload it with POST /v1/media first"
            elif owner != item.topic.sender and (item.topic.sender, media_id) not in received:
                refused[item.key] = (
                    f"attachment {media_id!r} is not yours: send files you uploaded or received in a conversation "
                    "you are in"
                )
            else:
                continue
            break
    return refused


def grant(session: Session, stored: Sequence[Item], *, postgres: bool) -> None:
    """The members of the conversations these messages went to may now read their attachments."""
    rows = sorted({(media_id, item.conversation) for item in stored for media_id in item.payload.attachments})
    if not rows:
        return
    values = [{"media_id": media_id, "conversation_id": conversation} for media_id, conversation in rows]
    dialect_insert = postgres_insert if postgres else sqlite_insert
    session.execute(dialect_insert(MEDIA_GRANTS).values(values).on_conflict_do_nothing())
