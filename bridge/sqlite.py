"""The bridge's seq reservation on SQLite (and any database without the fast paths of :mod:`bridge.postgres`):
the same statements as there, as SQLAlchemy Core, through the caller's session."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from switchboard.tables import Conversation, DmMember

CONVERSATIONS = Conversation.__table__  # type: ignore[attr-defined]
DM_MEMBERS = DmMember.__table__  # type: ignore[attr-defined]


def reserve_seqs(
    session: Session, wanted: dict[str, tuple[str, int]], dm_members: list[tuple[str, str]], now: datetime
) -> dict[str, int]:
    """Create missing conversations (and their DM members); add each count to its counter; return the new
    last seqs."""
    session.execute(
        sqlite_insert(CONVERSATIONS)
        .values(
            [
                {"id": c, "kind": kind, "last_seq": 0, "created_at": now, "updated_at": now}
                for c, (kind, _) in sorted(wanted.items())
            ]
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    if dm_members:
        session.execute(
            sqlite_insert(DM_MEMBERS)
            .values([{"conversation_id": c, "user_name": u} for c, u in dm_members])
            .on_conflict_do_nothing()
        )
    counts = {conversation: n for conversation, (_, n) in wanted.items()}
    result = session.execute(
        update(Conversation)
        .where(col(Conversation.id).in_(sorted(counts)))
        .values(last_seq=col(Conversation.last_seq) + case(counts, value=col(Conversation.id)), updated_at=now)
        .returning(col(Conversation.id), col(Conversation.last_seq))
    )
    return {conversation: int(last) for conversation, last in result.all()}
