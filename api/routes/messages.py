"""``GET /v1/conversations/{conversation}/messages``: a conversation's history, paged by seq."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import col, select

from api.deps import CurrentUser, SessionDep
from api.schemas import MessagePublic, MessagesPage
from switchboard import accounts
from switchboard.tables import Message
from switchboard.topics import parse_conversation

router = APIRouter(prefix="/v1/conversations", tags=["messages"])

MAX_PAGE = 500


@router.get(
    "/{conversation}/messages",
    response_model=MessagesPage,
    responses={
        401: {"description": "Missing or bad credentials."},
        403: {"description": "The caller is not part of this conversation."},
        404: {"description": "No such conversation."},
    },
)
def list_messages(
    session: SessionDep,
    user: CurrentUser,
    conversation: Annotated[str, Path(description="dm:{a}:{b} (names sorted) or group:{g}", examples=["dm:alice:bob"])],
    before: Annotated[int | None, Query(ge=1, description="Only messages with seq < before (newest first).")] = None,
    after: Annotated[int | None, Query(ge=0, description="Only messages with seq > after (oldest first).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size, at most 500.")] = 50,
) -> MessagesPage:
    """Newest first by default; with ``after``, oldest first. ``next`` continues in the same direction."""
    parsed = parse_conversation(conversation)
    if parsed is None or not accounts.conversation_exists(session, parsed):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"conversation {conversation!r} does not exist")
    if not accounts.may_read(session, user.name, parsed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"you are not part of {conversation!r}")

    forward = after is not None
    query = select(Message).where(Message.conversation_id == conversation)
    if before is not None:
        query = query.where(col(Message.seq) < before)
    if after is not None:
        query = query.where(col(Message.seq) > after)
    query = query.order_by(col(Message.seq).asc() if forward else col(Message.seq).desc()).limit(limit + 1)
    rows = list(session.exec(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return MessagesPage(
        conversation=conversation,
        direction="forward" if forward else "backward",
        messages=[
            MessagePublic(
                conversation=row.conversation_id,
                seq=row.seq,
                sender=row.sender,
                id=row.client_msg_id,
                body=row.body,
                stored_at=row.stored_at,
            )
            for row in rows
        ],
        next=rows[-1].seq if more and rows else None,
    )
