"""A conversation's history, paged by seq, and single messages with their delivery and read state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as FastApiPath
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from api import reads
from api.deps import CONVERSATION_ERRORS, CONVERSATION_PATH, CurrentUser, ReadableConversation, SessionDep
from api.schemas import MAX_INT64, MessageDetail, MessagePublic, MessagesPage
from switchboard.tables import Message, Receipt

router = APIRouter(prefix="/v1", tags=["messages"])

MAX_PAGE = 500


@router.get("/conversations/{conversation}/messages", response_model=MessagesPage, responses=CONVERSATION_ERRORS)
async def list_messages(
    request: Request,
    user: CurrentUser,
    conversation: Annotated[str, CONVERSATION_PATH],
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_INT64, description="Only messages with seq < before (newest first).", examples=[41]),
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_INT64, description="Only messages with seq > after (oldest first).", examples=[0]),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size, at most 500.", examples=[50])] = 50,
) -> Response:
    """Newest first by default; with ``after``, oldest first. ``next`` continues in the same direction."""
    engine = request.app.state.read_engine
    page = await run_in_threadpool(reads.history_page, engine, user.name, conversation, before, after, limit)
    return Response(page, media_type="application/json")


@router.get("/messages/{conversation}/{seq}", response_model=MessageDetail, responses=CONVERSATION_ERRORS)
def get_message(
    session: SessionDep,
    conversation: ReadableConversation,
    seq: Annotated[
        int, FastApiPath(ge=1, le=MAX_INT64, description="The message's place in the conversation.", examples=[1])
    ],
) -> MessageDetail:
    """One message, with who has received and who has read it (from their receipts)."""
    row = session.exec(select(Message).where(Message.conversation_id == conversation.id, Message.seq == seq)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{conversation.id!r} has no message {seq}")
    receipts = session.exec(
        select(Receipt).where(Receipt.conversation_id == conversation.id, Receipt.user_name != row.sender)
    ).all()
    return MessageDetail(
        **public_message(row).model_dump(),
        delivered_to=sorted(r.user_name for r in receipts if r.delivered_seq >= seq),
        read_by=sorted(r.user_name for r in receipts if r.read_seq >= seq),
    )


def public_message(row: Message) -> MessagePublic:
    return MessagePublic(
        conversation=row.conversation_id,
        seq=row.seq,
        sender=row.sender,
        id=row.client_msg_id,
        body=row.body,
        stored_at=row.stored_at,
        attachments=row.attachments.split(),
    )
