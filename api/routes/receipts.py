"""``POST /v1/conversations/{conversation}/read``: move the caller's read watermark, and tell it live.

Like a ``read`` receipt over MQTT: the watermark moves forward (never back, never past the last message),
and when it moved the same ``receipt/{to}/{caller}`` event a client would publish goes out live to the
users switchboard.read_receipts names (a DM's other member, a group's authors of the messages read) and
to the caller's other devices (``receipt/+/{me}``). The API has no MQTT connection: it writes the events
into the live-events outbox in the watermark's transaction, and the bridge publishes them
(switchboard.live_events, bridge/live_events.py).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session, col, select

from api.deps import BODY_ERRORS, CONVERSATION_ERRORS, CurrentUser, ReadableConversation, SessionDep
from api.schemas import ReadRequest, Watermarks
from switchboard import live_events, read_receipts
from switchboard.payloads import ReceiptPayload
from switchboard.tables import Receipt
from switchboard.watermarks import save_receipt

router = APIRouter(prefix="/v1/conversations", tags=["receipts"])


@router.post("/{conversation}/read", response_model=Watermarks, responses={**CONVERSATION_ERRORS, **BODY_ERRORS})
def mark_read(
    session: SessionDep, user: CurrentUser, conversation: ReadableConversation, request: ReadRequest
) -> Watermarks:
    """Everything up to ``up_to_seq`` is read (and so delivered). Watermarks only move forward, and stop at
    the conversation's last message. When the read watermark moved, the receipt is published live on
    ``receipt/{to}/{caller}`` (docs/protocol.md, "Receipts from REST")."""
    _, before = _watermarks(session, user.name, conversation.id)
    refused = save_receipt(
        session,
        reader=user.name,
        sender=user.name,
        receipt=ReceiptPayload(conversation.id, request.up_to_seq, "read"),
    )
    if refused is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=refused.reason)
    delivered, read = _watermarks(session, user.name, conversation.id)
    live_events.queue(session, read_receipts.read_events(session, user.name, conversation, before, read))
    session.commit()
    return Watermarks(conversation=conversation.id, delivered_seq=delivered, read_seq=read)


def _watermarks(session: Session, user: str, conversation: str) -> tuple[int, int]:
    """The user's delivered and read watermarks in the conversation, as the transaction sees them now."""
    row = session.exec(
        select(col(Receipt.delivered_seq), col(Receipt.read_seq)).where(
            col(Receipt.user_name) == user, col(Receipt.conversation_id) == conversation
        )
    ).first()
    return (row[0], row[1]) if row is not None else (0, 0)
