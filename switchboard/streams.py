"""Change streams: positions that follow commit order, for ``GET /v1/sync`` and the broker's directory watch.

Each stream ("messages", "receipts", "directory") has one row in ``stream_positions``. A writer calls
:func:`advance` inside its transaction to take the next ``count`` positions; the UPDATE locks the row
until the transaction ends, so a later writer gets larger positions only after the earlier one has
committed. A reader that has seen position ``p`` has therefore seen everything at or below ``p``: a
cursor never skips a change that commits late. (Identity columns give no such promise: ids are
handed out at insert time, and transactions commit in any order.)

Writers lock streams in one order — receipts, then messages, then directory — so they never deadlock.

On Postgres, :func:`advance` also sends ``NOTIFY switchboard_streams, '<stream>'`` (in the same statement,
so no extra round trip); Postgres delivers it when the transaction commits, and only then. The API's
change watch (api/changes.py) LISTENs, so a long-polling ``/v1/sync`` answers as soon as its change
commits. On SQLite the watch polls :func:`heads` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from switchboard.schema import stream_positions

if TYPE_CHECKING:
    from sqlmodel import Session

MESSAGES = "messages"
RECEIPTS = "receipts"
DIRECTORY = "directory"
ALL = (MESSAGES, RECEIPTS, DIRECTORY)
#: The Postgres channel :func:`advance` notifies, with the stream's name as the payload.
CHANNEL = "switchboard_streams"


def advance(session: Session, stream: str, count: int = 1) -> int:
    """Take ``count`` positions of ``stream``; returns the last one (the first is ``last - count + 1``)."""
    returned: list[Any] = [stream_positions.c.position]
    if session.get_bind().dialect.name == "postgresql":
        returned.append(func.pg_notify(CHANNEL, stream))  # sent at commit, to every LISTENing API process
    position = session.execute(
        update(stream_positions)
        .where(stream_positions.c.name == stream)
        .values(position=stream_positions.c.position + count)
        .returning(*returned)
    ).scalar_one_or_none()
    if position is None:  # a database created before the stream existed: start it
        session.execute(insert(stream_positions).values(name=stream, position=count))
        return count
    return int(position)


def heads(session: Session) -> dict[str, int]:
    """The last committed position of every stream."""
    rows = session.execute(select(stream_positions.c.name, stream_positions.c.position)).all()
    found = {name: int(position) for name, position in rows}
    return {stream: found.get(stream, 0) for stream in ALL}
