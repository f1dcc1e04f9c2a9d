"""``GET /v1/conversations``: the caller's conversations, newest activity first, each with its last message
and the caller's unread count (messages from others after the caller's read watermark); and muting one
(``PUT``/``DELETE /v1/conversations/{conversation}/mute``) for notifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from api.deps import AUTH_ERRORS, CONVERSATION_ERRORS, CurrentUser, ReadableConversation, SessionDep
from api.routes.messages import public_messages
from api.schemas import ConversationPublic, ConversationsList, MuteState
from switchboard import accounts
from switchboard.tables import Conversation, Message, MutedConversation, Receipt

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

MAX_CONVERSATIONS = 500


@router.get("", response_model=ConversationsList, responses=AUTH_ERRORS)
def list_conversations(
    session: SessionDep,
    user: CurrentUser,
    limit: Annotated[
        int, Query(ge=1, le=MAX_CONVERSATIONS, description="At most this many, newest first.", examples=[100])
    ] = 100,
) -> ConversationsList:
    """DMs and groups the caller takes part in that have at least one message."""
    me = user.name
    conversations = session.execute(
        select(Conversation, Message)
        .join(
            Message,
            and_(col(Message.conversation_id) == Conversation.id, col(Message.seq) == Conversation.last_seq),
            isouter=True,
        )
        .where(col(Conversation.id).in_(accounts.readable_conversation_ids(me)))
        .order_by(col(Conversation.updated_at).desc(), col(Conversation.id))
        .limit(limit)
    ).all()
    ids = [conversation.id for conversation, _ in conversations]
    unread: dict[str, int] = (
        dict(
            session.execute(
                select(col(Message.conversation_id), func.count())
                .select_from(Message)
                .join(
                    Receipt,
                    and_(col(Receipt.conversation_id) == col(Message.conversation_id), col(Receipt.user_name) == me),
                    isouter=True,
                )
                .where(
                    col(Message.conversation_id).in_(ids),
                    col(Message.seq) > func.coalesce(Receipt.read_seq, 0),
                    col(Message.sender) != me,
                )
                .group_by(col(Message.conversation_id))
            ).all()
        )
        if ids
        else {}
    )
    shown = public_messages(session, [last for _, last in conversations if last is not None])
    last_messages = {message.conversation: message for message in shown}
    return ConversationsList(
        conversations=[
            ConversationPublic.model_validate(
                {
                    "id": conversation.id,
                    "kind": conversation.kind,
                    "last_seq": conversation.last_seq,
                    "updated_at": conversation.updated_at,
                    "last_message": last_messages.get(conversation.id),
                    "unread": unread.get(conversation.id, 0),
                }
            )
            for conversation, last in conversations
        ]
    )


@router.put("/{conversation}/mute", response_model=MuteState, responses=CONVERSATION_ERRORS)
def mute(session: SessionDep, user: CurrentUser, conversation: ReadableConversation) -> MuteState:
    """No more notifications for this conversation's messages (messages still arrive over MQTT)."""
    if session.get(MutedConversation, (user.name, conversation.id)) is None:
        session.add(MutedConversation(user_name=user.name, conversation_id=conversation.id))
        try:
            session.commit()
        except IntegrityError:  # muted by a concurrent request: the outcome is the same
            session.rollback()
    return MuteState(conversation=conversation.id, muted=True)


@router.delete("/{conversation}/mute", response_model=MuteState, responses=CONVERSATION_ERRORS)
def unmute(session: SessionDep, user: CurrentUser, conversation: ReadableConversation) -> MuteState:
    """Notifications for this conversation again."""
    muted = session.get(MutedConversation, (user.name, conversation.id))
    if muted is not None:
        session.delete(muted)
        session.commit()
    return MuteState(conversation=conversation.id, muted=False)
