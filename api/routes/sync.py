"""``GET /v1/sync?since=CURSOR``: everything that changed for the caller since the cursor — new messages
in all its conversations, receipts that moved, membership changes in its groups — paged, with a new cursor.

A cursor holds one position per change stream (switchboard.streams). Positions follow commit order, so a
change that commits late is never skipped. Without ``since`` the answer is empty and its cursor is "now":
load the first screen with /v1/conversations and history, then sync from that cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import or_
from sqlmodel import Session, col, select

from api.deps import AUTH_ERRORS, CurrentUser, SessionDep
from api.routes.messages import public_messages
from api.schemas import MembershipChange, ReceiptPublic, SyncPage
from switchboard import accounts, streams
from switchboard.tables import DirectoryChange, DirectoryEvent, GroupMember, Message, Receipt

router = APIRouter(prefix="/v1", tags=["sync"])

MAX_LIMIT = 1000
StreamRow = TypeVar("StreamRow", Message, Receipt)
CURSOR_VERSION = "v1"
MEMBERSHIP_CHANGES: dict[str, str] = {DirectoryChange.MEMBER_ADDED: "added", DirectoryChange.MEMBER_REMOVED: "removed"}


@dataclass(frozen=True)
class Cursor:
    """Positions in the messages, receipts and directory streams."""

    messages: int
    receipts: int
    directory: int

    def __str__(self) -> str:
        return f"{CURSOR_VERSION}.{self.messages}.{self.receipts}.{self.directory}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        parts = text.split(".")
        if (
            len(parts) != 4
            or parts[0] != CURSOR_VERSION
            or not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts[1:])
        ):
            return None
        return cls(*(int(p) for p in parts[1:]))


@router.get(
    "/sync",
    response_model=SyncPage,
    responses={
        **AUTH_ERRORS,
        400: {
            "description": "`since` is not a cursor this server gave out: malformed, or well formed but ahead of the "
            "server's newest change (a cursor from another server, or the database was restored from a backup). "
            "Sync again without `since`."
        },
    },
)
def sync(
    session: SessionDep,
    user: CurrentUser,
    since: Annotated[
        str | None,
        Query(
            max_length=80,
            description="The `next` of the previous sync; omit to start from now.",
            examples=["v1.1000.70.5"],
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many of each kind of change.", examples=[100])
    ] = 100,
) -> SyncPage:
    """Oldest change first. When ``more`` is true, call again at once with ``next``."""
    heads = streams.heads(session)
    now = Cursor(heads[streams.MESSAGES], heads[streams.RECEIPTS], heads[streams.DIRECTORY])
    if since is None:
        return SyncPage(messages=[], receipts=[], memberships=[], next=str(now), more=False)
    cursor = _checked(since, now)
    messages = _stream_after(session, Message, user.name, cursor.messages, limit + 1)
    receipts = _stream_after(session, Receipt, user.name, cursor.receipts, limit + 1)
    events = _membership_events(session, user.name, cursor.directory, limit + 1)
    following = Cursor(
        _advanced(cursor.messages, now.messages, [m.stream_pos for m in messages], limit),
        _advanced(cursor.receipts, now.receipts, [r.stream_pos for r in receipts], limit),
        _advanced(cursor.directory, now.directory, [e.position for e in events], limit),
    )
    more = max(len(messages), len(receipts), len(events)) > limit
    messages, receipts, events = messages[:limit], receipts[:limit], events[:limit]
    return SyncPage(
        messages=public_messages(session, messages),
        receipts=[
            ReceiptPublic(
                conversation=r.conversation_id,
                user=r.user_name,
                delivered_seq=r.delivered_seq,
                read_seq=r.read_seq,
                updated_at=r.updated_at,
            )
            for r in receipts
        ],
        memberships=[
            MembershipChange.model_validate(
                {"group": e.group_name, "user": e.user_name, "change": MEMBERSHIP_CHANGES[e.change], "at": e.at}
            )
            for e in events
        ],
        next=str(following),
        more=more,
    )


def _checked(since: str, now: Cursor) -> Cursor:
    cursor = Cursor.parse(since)
    if cursor is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"since={since!r} is not a sync cursor: pass the `next` of an earlier /v1/sync, or omit since",
        )
    if cursor.messages > now.messages or cursor.receipts > now.receipts or cursor.directory > now.directory:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"since={since!r} is ahead of this server (was the database restored?): sync again without since",
        )
    return cursor


def _advanced(position: int, head: int, found: list[int], limit: int) -> int:
    """Where the next sync starts: after the last change returned when there were more than ``limit``; else
    at the head read before the queries (everything up to it had committed, so they saw it) or past it."""
    if len(found) > limit:
        return found[limit - 1]
    return max([position, head, *found])


def _stream_after(session: Session, table: type[StreamRow], user: str, after: int, limit: int) -> list[StreamRow]:
    """Rows of a stream (messages or receipts) after ``after``, in the conversations ``user`` reads."""
    query = (
        select(table)
        .where(
            col(table.conversation_id).in_(accounts.readable_conversation_ids(user)),
            col(table.stream_pos) > after,
        )
        .order_by(col(table.stream_pos))
        .limit(limit)
    )
    return list(session.exec(query).all())


def _membership_events(session: Session, user: str, after: int, limit: int) -> list[DirectoryEvent]:
    my_groups = select(col(GroupMember.group_name)).where(col(GroupMember.user_name) == user)
    return list(
        session.exec(
            select(DirectoryEvent)
            .where(
                col(DirectoryEvent.position) > after,
                col(DirectoryEvent.change).in_(list(MEMBERSHIP_CHANGES)),
                or_(col(DirectoryEvent.user_name) == user, col(DirectoryEvent.group_name).in_(my_groups)),
            )
            .order_by(col(DirectoryEvent.position))
            .limit(limit)
        ).all()
    )
