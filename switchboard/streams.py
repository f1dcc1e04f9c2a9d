"""Change streams: positions that follow commit order, for ``GET /v1/sync`` and the broker's directory watch.

Each stream ("messages", "receipts", "directory") has one row in ``stream_positions``. A writer calls
:func:`advance` inside its transaction to take the next ``count`` positions; the UPDATE locks the row
until the transaction ends, so a later writer gets larger positions only after the earlier one has
committed. A reader that has seen position ``p`` has therefore seen everything at or below ``p``: a
cursor never skips a change that commits late. (Identity columns give no such promise: ids are
handed out at insert time, and transactions commit in any order.)

Writers lock streams in one order — receipts, then messages, then directory — so they never deadlock.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlmodel import Session, col

from switchboard.tables import StreamPosition

MESSAGES = "messages"
RECEIPTS = "receipts"
DIRECTORY = "directory"
ALL = (MESSAGES, RECEIPTS, DIRECTORY)


def advance(session: Session, stream: str, count: int = 1) -> int:
    """Take ``count`` positions of ``stream``; returns the last one (the first is ``last - count + 1``)."""
    position = session.execute(
        update(StreamPosition)
        .where(col(StreamPosition.name) == stream)
        .values(position=col(StreamPosition.position) + count)
        .returning(col(StreamPosition.position))
    ).scalar_one_or_none()
    if position is None:  # a database created before the stream existed: start it
        session.add(StreamPosition(name=stream, position=count))
        session.flush()
        return count
    return int(position)


def heads(session: Session) -> dict[str, int]:
    """The last committed position of every stream."""
    rows = session.execute(select(col(StreamPosition.name), col(StreamPosition.position))).all()
    found = {name: int(position) for name, position in rows}
    return {stream: found.get(stream, 0) for stream in ALL}
