"""A conversation's history, paged by seq; single messages with their delivery and read state; unsending one
(its sender or an administrator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as FastApiPath
from sqlmodel import Session, select

from api import reads
from api.deps import CONVERSATION_ERRORS, CONVERSATION_PATH, CurrentUser, ReadableConversation, SessionDep, run_read
from api.schemas import MAX_INT64, MessageDetail, MessagePublic, MessagesPage, RelationPublic
from switchboard import accounts, live_events, message_views, relations
from switchboard.tables import Message, Receipt, Role, utcnow
from switchboard.topics import parse_conversation

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
    page = await run_read(request, reads.history_page, engine, user.name, conversation, before, after, limit)
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
        **public_messages(session, [row])[0].model_dump(),
        delivered_to=sorted(r.user_name for r in receipts if r.delivered_seq >= seq),
        read_by=sorted(r.user_name for r in receipts if r.read_seq >= seq),
    )


@router.delete(
    "/messages/{conversation}/{seq}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **CONVERSATION_ERRORS,
        403: {"description": "The caller is neither the message's sender nor an administrator."},
        409: {"description": "The message is an edit or an unsend, which cannot be unsent."},
    },
)
def unsend_message(
    session: SessionDep,
    user: CurrentUser,
    conversation: Annotated[str, FastApiPath(description="dm:{a}:{b} or group:{g}", examples=["dm:alice:bob"])],
    seq: Annotated[int, FastApiPath(ge=1, le=MAX_INT64, description="The message's seq.", examples=[1])],
) -> Response:
    """Unsend a message, as its sender's ``unsend`` relation does over MQTT: its body and attachments are no
    longer served, an unsend relation takes the next seq (so /v1/sync brings it) and is published live on
    the message's topic (the live-events outbox, in the same transaction). Its sender may, and an
    administrator may for any conversation. Unsending an unsent message again changes nothing (``204``)."""
    parsed = parse_conversation(conversation)
    if parsed is None or not accounts.conversation_exists(session, parsed):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"conversation {conversation!r} does not exist")
    row = session.exec(select(Message).where(Message.conversation_id == parsed.id, Message.seq == seq)).first()
    admin = user.role == Role.ADMIN
    if row is None and (admin or accounts.may_read(session, user.name, parsed)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{conversation!r} has no message {seq}")
    if row is None or (row.sender != user.name and not admin):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="only a message's sender or an administrator may unsend it"
        )
    unsent = relations.unsend_stored(session, row, user.name, utcnow())
    if isinstance(unsent, str):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=unsent)
    if unsent is not None:  # live, as an MQTT unsend is: published by the bridge once this commits
        live_events.queue(session, [(unsent.topic, unsent.payload)])
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def public_messages(session: Session, rows: Sequence[Message]) -> list[MessagePublic]:
    """Stored messages as clients see them, relations applied (switchboard.message_views)."""
    return [
        MessagePublic(
            conversation=view.conversation,
            seq=view.seq,
            sender=view.sender,
            id=view.id,
            body=view.body,
            stored_at=view.stored_at,
            attachments=view.attachments,
            relates_to=RelationPublic.model_validate(view.relates_to, from_attributes=True)
            if view.relates_to
            else None,
            edited_at=view.edited_at,
            unsent=view.unsent,
            reactions=view.reactions,
        )
        for view in message_views.views(session, rows)
    ]
