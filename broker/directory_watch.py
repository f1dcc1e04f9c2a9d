"""Acts on directory events (switchboard.directory) as they commit, so administration takes effect on
open connections: a removed group member stops receiving the group, a disabled or deleted user (or one
whose password was reset) is disconnected.

The broker polls the events table every ``mqtt.directory_poll_seconds`` (one indexed query; the API may
run in another process, and the embedded SQLite default has no LISTEN/NOTIFY). It starts at the head, so
only changes made while it runs matter; the ACL cache (5 s) covers anything older.
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

    async def run(self) -> None:
        failing = False
        while True:
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
            await asyncio.sleep(self._interval)

    def apply(self, events: Sequence[DirectoryEvent]) -> None:
        for event in events:
            change = DirectoryChange(event.change)
            if event.group_name is not None:
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
