"""One change watch per API process: follows the change streams (switchboard.streams) and wakes the requests
waiting for them, so a long-polling ``GET /v1/sync?timeout=`` costs no database query while it waits.

The watch keeps the stream heads it has seen. When they move, it reads once what changed in between (the
conversations of new messages and receipts, the users and groups of directory events) and wakes only
the waiters those changes concern; each woken request then runs its own sync. It learns that heads moved:

- on Postgres from ``LISTEN switchboard_streams`` (every writer notifies at commit, see
  switchboard.streams), on a connection of its own in a thread; a poll every ``FALLBACK_SECONDS`` covers
  a listener that is reconnecting;
- on SQLite by reading the heads every ``api.sync_poll_seconds`` (one query per process, whatever the
  number of waiters).

Directory events that revoke a user's tokens are passed to ``on_revoked`` (the API's token cache forgets
the user's tokens: api/callers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, select

from api.callers import REVOKING
from switchboard import streams
from switchboard.schema import DirectoryChange, directory_events, stream_positions
from switchboard.tables import Message, Receipt

log = logging.getLogger(__name__)

#: On Postgres, how often the heads are read even without a notification.
FALLBACK_SECONDS = 1.0
messages = Message.__table__  # type: ignore[attr-defined]
receipts = Receipt.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Changes:
    """What committed between two sets of heads."""

    heads: dict[str, int]
    conversations: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    revoked: tuple[str, ...] = ()


@dataclass(eq=False)
class Waiter:
    """A request waiting for changes to ``user``'s conversations (``conversations``: the ids it reads now;
    a new DM naming the user wakes it too) or to the membership of ``user`` or of its ``groups``."""

    user: str
    conversations: frozenset[str]
    groups: frozenset[str]
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def concerned(self, changes: Changes) -> bool:
        if self.user in changes.users or not self.groups.isdisjoint(changes.groups):
            return True
        for conversation in changes.conversations:
            if conversation in self.conversations:
                return True
            kind, _, rest = conversation.partition(":")
            if kind == "dm" and self.user in rest.split(":"):
                return True
        return False


def read_heads(connection: Connection) -> dict[str, int]:
    rows = connection.execute(select(stream_positions.c.name, stream_positions.c.position)).all()
    found = {name: int(position) for name, position in rows}
    return {stream: found.get(stream, 0) for stream in streams.ALL}


def read_changes(engine: Engine, since: dict[str, int]) -> Changes:
    """The heads now and what committed after ``since`` up to them (a few index range scans)."""
    with engine.connect() as connection:
        heads = read_heads(connection)
        if heads == since:
            return Changes(heads)
        conversations: set[str] = set()
        for table, stream in ((messages, streams.MESSAGES), (receipts, streams.RECEIPTS)):
            if heads[stream] > since[stream]:
                window = (table.c.stream_pos > since[stream], table.c.stream_pos <= heads[stream])
                conversations.update(
                    connection.execute(select(table.c.conversation_id).distinct().where(*window)).scalars()
                )
        users: set[str] = set()
        groups: set[str] = set()
        revoked: list[str] = []
        if heads[streams.DIRECTORY] > since[streams.DIRECTORY]:
            rows = connection.execute(
                select(directory_events.c.change, directory_events.c.user_name, directory_events.c.group_name).where(
                    directory_events.c.position > since[streams.DIRECTORY],
                    directory_events.c.position <= heads[streams.DIRECTORY],
                )
            ).all()
            for change, user, group in rows:
                users.add(user)
                if group is not None:
                    groups.add(group)
                if DirectoryChange(change) in REVOKING:
                    revoked.append(user)
    return Changes(heads, frozenset(conversations), frozenset(users), frozenset(groups), tuple(revoked))


class ChangeWatch:
    """Started on first use in the running event loop; :meth:`stop` ends it."""

    def __init__(self, engine: Engine, poll_seconds: float, on_revoked: Callable[[str], None]) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._poll = FALLBACK_SECONDS if self._postgres else poll_seconds
        self._on_revoked = on_revoked
        self._waiters: set[Waiter] = set()
        self._task: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        #: The heads whose changes have been handed to waiters (None until the first read).
        self.heads: dict[str, int] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self.heads is not None

    def ensure_started(self) -> None:
        if self._task is None:
            self._poke = asyncio.Event()
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="api-change-watch")

    async def ready(self) -> dict[str, int]:
        """The heads the watch has handled, once it has read them."""
        self.ensure_started()
        assert self._ready is not None
        await self._ready.wait()
        assert self.heads is not None
        return self.heads

    def register(self, waiter: Waiter) -> None:
        self._waiters.add(waiter)

    def unregister(self, waiter: Waiter) -> None:
        self._waiters.discard(waiter)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def closing(self) -> bool:
        """True once :meth:`release` was called: nobody waits any more."""
        return self._stopping.is_set()

    def release(self) -> None:
        """The server is stopping: every waiter answers now (its empty page), and no new one waits."""
        self._stopping.set()
        for waiter in self._waiters:
            waiter.woken.set()

    async def stop(self) -> None:
        self.release()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)

    async def _run(self) -> None:
        assert self._poke is not None and self._ready is not None
        loop = asyncio.get_running_loop()
        while self.heads is None:
            try:
                self.heads = await asyncio.to_thread(self._first_heads)
            except Exception as exc:  # the database is unreachable: the cache waits, the requests say 503
                log.warning("api: the change watch cannot read the stream heads yet: %s", exc)
                await asyncio.sleep(1.0)
        if self._postgres:
            self._listener = threading.Thread(target=self._listen, args=(loop,), name="api-listen", daemon=True)
            self._listener.start()
        self._ready.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._poll)
            self._poke.clear()
            try:
                changes = await asyncio.to_thread(read_changes, self._engine, self.heads)
            except Exception as exc:
                log.warning("api: the change watch cannot read changes: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._dispatch(changes)

    def _first_heads(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return read_heads(connection)

    def _dispatch(self, changes: Changes) -> None:
        for user in changes.revoked:
            self._on_revoked(user)
        self.heads = changes.heads
        if changes.conversations or changes.users or changes.groups:
            for waiter in self._waiters:
                if waiter.concerned(changes):
                    waiter.woken.set()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """LISTEN on a connection of its own (not the pool's), poking the watch on every notification."""
        from psycopg import sql

        statement = sql.SQL("LISTEN {}").format(sql.Identifier(streams.CHANNEL))
        while not self._stopping.is_set():
            try:
                raw = self._engine.raw_connection()
                connection = raw.driver_connection
                raw.detach()  # closed, not returned to the pool, when this thread is done with it
                try:
                    connection.autocommit = True  # type: ignore[union-attr]
                    connection.execute(statement)  # type: ignore[union-attr]
                    loop.call_soon_threadsafe(self._wake)  # anything that committed before LISTEN
                    while not self._stopping.is_set():
                        for _ in connection.notifies(timeout=0.5):  # type: ignore[union-attr]
                            loop.call_soon_threadsafe(self._wake)
                finally:
                    raw.close()
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("api: LISTEN %s failed (%s); polling until it is back", streams.CHANNEL, exc)
                self._stopping.wait(1.0)

    def _wake(self) -> None:
        if self._poke is not None:
            self._poke.set()
