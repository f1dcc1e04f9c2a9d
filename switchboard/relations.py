"""Relations in the database: a relation's target, the rules that need it, and applying a relation to it.

A relation (issue 16 §2; its payload in switchboard.payloads) is stored as a message of its own, with its
own seq, ``relates_kind`` and ``relates_to_seq`` (the target's seq), and is applied to its target:

- ``edit``: the target's ``body`` becomes the edit's body and ``edited_at`` is set;
- ``unsend``: the target's ``unsent_at`` is set and its body and attachments are erased, as are the bodies
  of its edits; the media grants of its attachments in that conversation are revoked unless another
  message there still carries the file;
- ``reply``, ``reaction``: the target is unchanged (reactions are gathered when history is shown, see
  switchboard.message_views; an unsend of a reaction marks the reaction unsent, which removes it).

The rules here are those the broker's door cannot check (switchboard.payloads.relation_refusal checks the
others): the target exists in this conversation; edits, replies and reactions target a message, not
another relation; unsends target a message or a reaction; nothing but a reply targets an unsent message;
an edit comes within ``chat.edit_window_seconds`` of its target.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, insert, select, tuple_, update
from sqlmodel import Session, col

from switchboard import streams
from switchboard.tables import Conversation, MediaGrant, Message, MessageKey

#: The kinds of target each relation may name (None: a plain message).
_TARGETS: dict[str, tuple[str | None, ...]] = {
    "reply": (None, "reply"),
    "reaction": (None, "reply"),
    "edit": (None, "reply"),
    "unsend": (None, "reply", "reaction"),
}


@dataclass(slots=True)
class Target:
    """What the rules need of a relation's target. ``seq`` is None while the target is a message of the
    same batch, not yet given its seq; ``unsent`` follows the batch's own unsends."""

    conversation: str
    seq: int | None
    kind: str | None
    stored_at: datetime
    unsent: bool


def find_targets(session: Session, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Target]:
    """The stored messages with these ``(sender, client id)`` keys (one query)."""
    if not keys:
        return {}
    rows = session.execute(
        select(
            col(MessageKey.sender),
            col(MessageKey.client_msg_id),
            col(Message.conversation_id),
            col(Message.seq),
            col(Message.relates_kind),
            col(Message.stored_at),
            col(Message.unsent_at),
        )
        .join(
            Message,
            and_(
                col(Message.conversation_id) == col(MessageKey.conversation_id),
                col(Message.seq) == col(MessageKey.seq),
                col(Message.stored_at) == col(MessageKey.stored_at),  # the partition, on Postgres
            ),
        )
        .where(tuple_(col(MessageKey.sender), col(MessageKey.client_msg_id)).in_(sorted(set(keys))))
    ).all()
    return {
        (sender, client_id): Target(conversation, seq, kind, stored_at, unsent_at is not None)
        for sender, client_id, conversation, seq, kind, stored_at, unsent_at in rows
    }


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def refusal(
    kind: str,
    sender: str,
    client_id: str,
    target: Target | None,
    *,
    conversation: str,
    now: datetime,
    edit_window: timedelta,
) -> str | None:
    """Why a relation of ``kind`` naming ``(sender, client_id)`` cannot be stored in ``conversation``; None
    when it can. A target in another conversation is answered as a missing one: the sender learns nothing
    of conversations it may not read."""
    if target is None or target.conversation != conversation:
        return f"relates_to names no message {client_id!r} from {sender!r} in this conversation"
    if target.kind not in _TARGETS[kind]:
        return f"{_a(kind)} cannot target {_a(str(target.kind))}: relate to the original message"
    if target.unsent and kind != "reply":
        return f"message {client_id!r} was unsent"
    if kind == "edit" and now - target.stored_at > edit_window:
        seconds = int(edit_window.total_seconds())
        return f"message {client_id!r} is too old to edit: the window is {seconds} s (chat.edit_window_seconds)"
    return None


def apply_edit(session: Session, conversation: str, seq: int, body: str, now: datetime) -> None:
    """The target's text becomes ``body``."""
    session.execute(
        update(Message)
        .where(col(Message.conversation_id) == conversation, col(Message.seq) == seq)
        .values(body=body, edited_at=now)
    )


def apply_unsend(session: Session, conversation: str, seq: int, now: datetime) -> None:
    """The target is unsent: its text, its edits' texts and its attachments are no longer kept, and the
    conversation's members lose access to its files unless another message there carries them."""
    at_target = (col(Message.conversation_id) == conversation, col(Message.seq) == seq)
    attachments = session.execute(select(col(Message.attachments)).where(*at_target)).scalar_one_or_none()
    session.execute(update(Message).where(*at_target).values(body="", attachments="", unsent_at=now))
    session.execute(
        update(Message)
        .where(
            col(Message.conversation_id) == conversation,
            col(Message.relates_to_seq) == seq,
            col(Message.relates_kind) == "edit",
        )
        .values(body="")
    )
    for media_id in (attachments or "").split():
        if not _still_carried(session, conversation, media_id):
            session.execute(
                delete(MediaGrant).where(
                    col(MediaGrant.media_id) == media_id, col(MediaGrant.conversation_id) == conversation
                )
            )


def _still_carried(session: Session, conversation: str, media_id: str) -> bool:
    """Whether a message of ``conversation`` that is not unsent still carries ``media_id`` (unsends are rare:
    a scan of the conversation's messages with attachments is acceptable)."""
    carriers = session.execute(
        select(col(Message.attachments)).where(
            col(Message.conversation_id) == conversation,
            col(Message.unsent_at).is_(None),
            col(Message.attachments).contains(media_id, autoescape=True),
        )
    ).scalars()
    return any(media_id in attachments.split() for attachments in carriers)


@dataclass(frozen=True, slots=True)
class Unsent:
    """An unsend stored through REST, and what its live recipients get: the payload published on the target's own
    topic (``dm/{to}/{target sender}`` or ``group/{group}/{target sender}``), as an MQTT unsend of the target is."""

    topic: str
    payload: bytes


def unsend_stored(session: Session, target: Message, by: str, now: datetime) -> Unsent | str | None:
    """Unsend ``target`` on behalf of ``by`` (its sender or an administrator, through REST; the caller checks
    who): an unsend relation is stored with the next seq, so /v1/sync delivers it in order as it does an
    unsend published over MQTT, and is applied. Returns the live event to queue (switchboard.live_events) in
    the same transaction; None when there is nothing to do (the target is unsent already); why not, when
    the target is a relation an unsend may not name.

    The relation is stored with ``by`` as its sender (history and sync show who unsent it, an administrator
    included, as Matrix shows a redaction's own sender). Live it goes out on the target's topic, the only one
    every live recipient of the conversation reads (a DM's topic names its two members), so its idempotency
    key in ``message_keys`` is ``(target's sender, client id)``: the bridge, subscribed to that topic too,
    finds the key and takes the event for the stored message it is (not a second unsend)."""
    if target.unsent_at is not None:
        return None
    if target.relates_kind not in _TARGETS["unsend"]:
        return f"an unsend cannot target {_a(str(target.relates_kind))}: unsend the original message"
    client_id = f"unsend-{uuid.uuid4().hex}"
    relation = {"kind": "unsend", "sender": target.sender, "id": target.client_msg_id}
    payload = json.dumps({"id": client_id, "body": "", "relates_to": relation}, separators=(",", ":")).encode()
    seq = session.execute(
        update(Conversation)
        .where(col(Conversation.id) == target.conversation_id)
        .values(last_seq=col(Conversation.last_seq) + 1, updated_at=now)
        .returning(col(Conversation.last_seq))
    ).scalar_one()
    position = streams.advance(session, streams.MESSAGES)
    key = {"client_msg_id": client_id, "conversation_id": target.conversation_id, "seq": seq}
    session.execute(insert(MessageKey).values(**key, sender=target.sender, stored_at=now))
    session.execute(
        insert(Message).values(
            **key,
            sender=by,
            body="",
            topic=target.topic,
            payload=payload,
            stored_at=now,
            stream_pos=position,
            attachments="",
            relates_kind="unsend",
            relates_to_seq=target.seq,
        )
    )
    apply_unsend(session, target.conversation_id, target.seq, now)
    return Unsent(target.topic, payload)
