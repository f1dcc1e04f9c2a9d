"""Directory events: every change to a user's standing or a group's members, in commit order.

Written in the same transaction as the change (by switchboard.accounts). The broker reads them to
act at once on open connections (drop a removed member's group deliveries, disconnect a disabled
user); ``GET /v1/sync`` shows members their groups' membership changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from switchboard import streams
from switchboard.tables import DirectoryChange, DirectoryEvent


def record(session: Session, change: DirectoryChange, user: str, group: str | None = None) -> DirectoryEvent:
    """Add one event at the next position of the directory stream (the caller commits)."""
    event = DirectoryEvent(
        position=streams.advance(session, streams.DIRECTORY), change=change, user_name=user, group_name=group
    )
    session.add(event)
    session.flush()
    return event


def events_after(session: Session, position: int, limit: int = 1000) -> Sequence[DirectoryEvent]:
    """Committed events after ``position``, oldest first."""
    query = select(DirectoryEvent).where(col(DirectoryEvent.position) > position)
    return session.exec(query.order_by(col(DirectoryEvent.position)).limit(limit)).all()


def was_deleted(session: Session, user: str) -> bool:
    """True when an account of this name existed and was deleted."""
    query = select(DirectoryEvent.position).where(
        DirectoryEvent.user_name == user, DirectoryEvent.change == DirectoryChange.USER_DELETED
    )
    return session.exec(query.limit(1)).first() is not None
