"""Wakes the live-events publisher (bridge/live_events.py) when Postgres says an event was committed.

The API's transaction that writes an event also runs ``pg_notify`` on switchboard.live_events.CHANNEL,
which Postgres delivers at commit. A daemon thread holds one connection of the engine's pool LISTENing
on the channel and sets an asyncio event for each notification, so the bridge publishes within a round
trip of the commit and never polls an empty table. The connection is taken out of the pool for good (it
is closed, not returned, when the thread ends). When it drops, the thread connects again after a second;
meanwhile, and after every reconnection, the publisher looks anyway (a notification sent while nobody
listened is lost, the rows are not). SQLite has no notifications: there the publisher polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from psycopg import Error as PsycopgError
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from switchboard.live_events import CHANNEL

log = logging.getLogger(__name__)

#: How long one wait for notifications lasts: the thread notices it should stop within this.
WAIT_SECONDS = 1.0
RECONNECT_SECONDS = 1.0


class Wakeup:
    """LISTENs in a daemon thread; :attr:`listening` while it does; sets ``wake`` on each notification."""

    def __init__(self, engine: Engine, wake: asyncio.Event) -> None:
        self._engine = engine
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self.listening = False

    @staticmethod
    def possible(engine: Engine) -> bool:
        return engine.dialect.name == "postgresql"

    def start(self) -> None:
        threading.Thread(target=self._run, name="live-events-listen", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _woken(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake.set)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._listen()
            except (PsycopgError, SQLAlchemyError) as exc:
                if not failing:
                    log.warning("live events: cannot listen for notifications (%s); polling meanwhile", exc)
                failing = True
            self.listening = False
            self._stop.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        pooled = self._engine.raw_connection()
        try:
            connection = pooled.driver_connection
            assert connection is not None
            connection.rollback()  # the pool's ping may have opened a transaction
            connection.autocommit = True
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self.listening = True
            self._woken()  # whatever was committed before the LISTEN
            while not self._stop.is_set():
                for _ in connection.notifies(timeout=WAIT_SECONDS, stop_after=1):
                    self._woken()
        finally:
            pooled.invalidate()  # LISTENing: never back into the pool
