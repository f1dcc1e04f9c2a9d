"""``POST /v1/conversations/{conversation}/read``: move the caller's read watermark (like an MQTT receipt)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import BODY_ERRORS, CONVERSATION_ERRORS, CurrentUser, ReadableConversation, SessionDep
from api.schemas import ReadRequest, Watermarks
from switchboard.payloads import ReceiptPayload
from switchboard.tables import Receipt
from switchboard.watermarks import save_receipt

router = APIRouter(prefix="/v1/conversations", tags=["receipts"])


@router.post("/{conversation}/read", response_model=Watermarks, responses={**CONVERSATION_ERRORS, **BODY_ERRORS})
def mark_read(
    session: SessionDep, user: CurrentUser, conversation: ReadableConversation, request: ReadRequest
) -> Watermarks:
    """Everything up to ``up_to_seq`` is read (and so delivered). Watermarks only move forward, and stop at
    the conversation's last message."""
    refused = save_receipt(
        session,
        reader=user.name,
        sender=user.name,
        receipt=ReceiptPayload(conversation.id, request.up_to_seq, "read"),
    )
    if refused is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=refused.reason)
    session.commit()
    row = session.get(Receipt, (user.name, conversation.id))
    return Watermarks(
        conversation=conversation.id,
        delivered_seq=row.delivered_seq if row else 0,
        read_seq=row.read_seq if row else 0,
    )
