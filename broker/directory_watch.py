"""Acts on directory events (switchboard.directory) as they commit, so administration takes effect on
open connections: a removed group member stops receiving the group, a disabled or deleted user (or one
whose password was reset) is disconnected, a block (``user_name`` is the blocker) counts for its next DM,
typing and presence.

The broker polls the events table every ``mqtt.directory_poll_seconds`` (one indexed query; the API may
run in another process, and the embedded SQLite default has no LISTEN/NOTIFY). It starts at the head, so
only changes made while it runs matter; the ACL cache covers anything older.

A login answered from remembered credentials first waits for ``catch_up``: a poll that starts after it
asked, shared by every login waiting at that moment. So a user disabled (or given a new password) before
its client connects is refused at once, not up to one poll interval later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from broker.access import AccessControl
from switchboard import lookups, streams
from switchboard.errors import StoreError
from switchboard.lookups import DirectoryEvent
from switchboard.schema import DirectoryChange

log = logging.getLogger(__name__)

REVOKING = {
    DirectoryChange.USER_DISABLED: "the account was disabled",
    DirectoryChange.USER_DELETED: "the account was deleted",
    DirectoryChange.PASSWORD_RESET: "the password was reset",
}


BLOCKS = (DirectoryChange.BLOCK_ADDED, DirectoryChange.BLOCK_REMOVED)


class DirectoryWatch:
    """Follows the directory stream and applies each event to the ACL cache and the open connections."""

    def __init__(
        self,
        engine: Engine,
        access: AccessControl,
        *,
        revoke: Callable[[str, str, bool], int],
        interval: float,
    ) -> None:
        """``revoke(user, reason, forget_sessions)`` closes the user's connections and returns how many."""
        self._engine = engine
        self._access = access
        self._revoke = revoke
        self._interval = interval
        self.position: int | None = None
        self._wake = asyncio.Event()
        self._next_poll: asyncio.Future[None] | None = None
        self._stopped = False

    async def catch_up(self) -> None:
        """Return once every directory event committed before this call has been applied (or a poll that
        started after it has failed: the database is then unreachable and logins are checked without it)."""
        if self._stopped:
            return
        if self._next_poll is None:
            self._next_poll = asyncio.get_running_loop().create_future()
        waiting = self._next_poll
        self._wake.set()
        await asyncio.shield(waiting)

    async def run(self) -> None:
        try:
            await self._poll_forever()
        finally:  # stopped: nobody would answer a waiting login
            self._stopped = True
            if self._next_poll is not None and not self._next_poll.done():
                self._next_poll.set_result(None)

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            polling, self._next_poll = self._next_poll, None
            try:
                if self.position is None:
                    self.position = await asyncio.to_thread(self._head)
                else:
                    self.apply(await asyncio.to_thread(self._load, self.position))
                if failing:
                    log.info("directory watch: reading directory events again")
                failing = False
            except (StoreError, SQLAlchemyError) as exc:
                if not failing:
                    log.warning("directory watch: cannot read directory events (%s); retrying", exc)
                failing = True
            finally:
                if polling is not None and not polling.done():
                    polling.set_result(None)
            if self._next_poll is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except TimeoutError:
                    pass

    def apply(self, events: Sequence[DirectoryEvent]) -> None:
        for event in events:
            change = DirectoryChange(event.change)
            if change in BLOCKS:
                self._access.forget_blocks(event.user_name)
            elif event.group_name is not None:
                self._access.forget_member(event.group_name, event.user_name)
            else:
                self._access.forget_user(event.user_name)
            reason = REVOKING.get(change)
            if reason is not None:
                closed = self._revoke(event.user_name, reason, change is DirectoryChange.USER_DELETED)
                log.info(
                    "directory watch: %s for user=%s; closed %d connection(s)",
                    reason,
                    event.user_name,
                    closed,
                    extra={"user": event.user_name},
                )
            self.position = event.position

    def _head(self) -> int:
        with self._engine.connect() as connection:
            return lookups.stream_head(connection, streams.DIRECTORY)

    def _load(self, position: int) -> Sequence[DirectoryEvent]:
        with self._engine.connect() as connection:
            return lookups.directory_events_after(connection, position)
