"""Who is told live of a read receipt made through REST, and with what: the same ``receipt/{to}/{from}``
event a client publishes over MQTT (docs/protocol.md, "Receipts").

``{from}`` is the reader; everyone subscribed to ``receipt/+/{reader}`` (the reader's other devices) gets
each of them, and ``{to}`` (subscribed to ``receipt/{to}/+``) is the user being told:

- in a DM, the other member (one event);
- in a group, the authors of the messages the watermark just moved over (one event each, as a client
  addresses them over MQTT), members still; bounded: the newest :data:`SCAN_MESSAGES` messages of the
  range, and at most :data:`MAX_AUTHORS` authors (the others read the watermark over HTTP or ``/v1/sync``);
- when there is nobody to tell (the reader read only its own messages), ``receipt/{reader}/{reader}``, so
  its other devices still see it.

The payload is ``{"conversation", "up_to_seq", "status": "read"}`` with the watermark as recorded.
"""

from __future__ import annotations

import json

from sqlmodel import Session, col, select

from switchboard.tables import GroupMember, Message
from switchboard.topics import Conversation, Kind

#: The most authors told of one group receipt.
MAX_AUTHORS = 50
#: How many of the newest messages read are searched for their authors.
SCAN_MESSAGES = 1000


def receipt_topic(to: str, reader: str) -> str:
    """``receipt/{to}/{from}``."""
    return f"receipt/{to}/{reader}"


def receipt_payload(conversation: str, up_to_seq: int) -> bytes:
    """What a client publishes for a read receipt."""
    return json.dumps(
        {"conversation": conversation, "up_to_seq": up_to_seq, "status": "read"}, separators=(",", ":")
    ).encode()


def read_events(
    session: Session, reader: str, conversation: Conversation, before: int, after: int
) -> list[tuple[str, bytes]]:
    """The ``(topic, payload)`` events telling of ``reader``'s read watermark moving from ``before`` to
    ``after`` in ``conversation``; none when it did not move."""
    if after <= before:
        return []
    if conversation.kind is Kind.DM:
        first, second = conversation.members
        told = [second if first == reader else first]
    else:
        told = _authors(session, reader, conversation, before, after) or [reader]
    payload = receipt_payload(conversation.id, after)
    return [(receipt_topic(to, reader), payload) for to in told]


def _authors(session: Session, reader: str, conversation: Conversation, before: int, after: int) -> list[str]:
    """Authors (other than the reader, members still) of the newest messages in ``(before, after]``."""
    low = max(before, after - SCAN_MESSAGES)
    senders = (
        select(col(Message.sender))
        .where(
            col(Message.conversation_id) == conversation.id,
            col(Message.seq) > low,
            col(Message.seq) <= after,
            col(Message.sender) != reader,
        )
        .distinct()
        .limit(MAX_AUTHORS)
    )
    members = select(col(GroupMember.user_name)).where(
        col(GroupMember.group_name) == conversation.group, col(GroupMember.user_name).in_(senders)
    )
    return sorted(session.exec(members).all())
