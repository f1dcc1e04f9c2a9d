"""Blocks: a user hides itself from another (issue 16 §3). The blocked user's DMs to the blocker are refused
at the broker's door, and neither sees the other's presence or typing; group messages still flow (both
chose the group).

Each change is recorded as a directory event in the same transaction (``block_added`` /
``block_removed``, ``user_name`` = the blocker, no group: whom stays private to the blocker), so the
broker forgets the blocker's cached block facts at once. ``GET /v1/sync`` never shows these events (it
shows membership changes only). Functions take a session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from switchboard import directory
from switchboard.tables import Block, DirectoryChange


def block(session: Session, blocker: str, blocked: str) -> tuple[Block, bool]:
    """``blocker`` blocks ``blocked`` (both checked by the caller); the block, and whether it is new (an
    existing block is kept as it was, with its first time, and records no event)."""
    found = session.get(Block, (blocker, blocked))
    if found is not None:
        return found, False
    row = Block(blocker=blocker, blocked=blocked)
    session.add(row)
    session.flush()
    directory.record(session, DirectoryChange.BLOCK_ADDED, blocker)
    return row, True


def unblock(session: Session, blocker: str, blocked: str) -> bool:
    """Lift ``blocker``'s block of ``blocked``; False when there was none (nothing is recorded)."""
    found = session.get(Block, (blocker, blocked))
    if found is None:
        return False
    session.delete(found)
    session.flush()
    directory.record(session, DirectoryChange.BLOCK_REMOVED, blocker)
    return True


def blocks_of(session: Session, blocker: str) -> Sequence[Block]:
    """Everyone ``blocker`` blocked, by name."""
    return session.exec(select(Block).where(col(Block.blocker) == blocker).order_by(col(Block.blocked))).all()
