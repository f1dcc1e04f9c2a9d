"""Publishes the live-events outbox (switchboard.live_events): MQTT events made outside the broker, such as a
read receipt made through ``POST /v1/conversations/{conversation}/read`` or an unsend made through
``DELETE /v1/messages/{conversation}/{seq}``.

Woken by Postgres when an event is committed (bridge/live_wakeup.py), or every ``bridge.live_events_poll_ms``
(50 ms) on SQLite, the bridge leases the waiting events, oldest first, publishes them at QoS 1 in order on
its own broker connection (the service account, which may publish ``receipt/{to}/{from}`` and, for an
unsend, the unsent message's ``dm/`` or ``group/`` topic: the bridge then receives that message too and
takes it for the stored unsend, by its key), and deletes them once the broker acknowledged every one.
Without a connection it waits; an event whose PUBACK does not come (the connection ended, the broker is
stuck) stays in the outbox and is published again when its lease of :data:`LEASE_SECONDS` runs out. The
database work runs in a daemon thread (bridge/daemon.py), so a stopping bridge never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bridge.daemon import DaemonWorker
from bridge.live_wakeup import Wakeup
from bridge.mqtt_client import BrokerConnection, BrokerUnavailable
from switchboard import live_events

log = logging.getLogger(__name__)

#: Events taken per round; a full page is followed at once by another.
PAGE = 500
#: How long a bridge holds the events it took; past it, another round (or bridge) publishes them again.
LEASE_SECONDS = 10.0
#: How long the PUBACKs of a round may take before the round gives up (its events wait for their lease).
ACK_TIMEOUT_SECONDS = 5.0
#: The pause between rounds while the database cannot be read.
FAILING_POLL_SECONDS = 1.0
#: On Postgres, while notifications wake the publisher, it also looks this often (or every
#: bridge.live_events_poll_ms if longer) for events whose lease ran out.
LISTENING_POLL_SECONDS = 1.0


class LiveEvents:
    """The outbox's publisher; :meth:`run` until cancelled."""

    def __init__(
        self,
        engine: Engine,
        poll_seconds: float,
        connection: Callable[[], BrokerConnection | None],
        *,
        lease_seconds: float = LEASE_SECONDS,
        ack_timeout_seconds: float = ACK_TIMEOUT_SECONDS,
        counter: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._poll = poll_seconds
        self._connection = connection
        self._lease = lease_seconds
        self._ack_timeout = ack_timeout_seconds
        self._counter = counter
        self._wakeup: Wakeup | None = None
        self._database = DaemonWorker("live-events-database")
        self.published = 0

    @property
    def listening(self) -> bool:
        """True while Postgres notifications wake the publisher (never on SQLite)."""
        return self._wakeup is not None and self._wakeup.listening

    async def run(self) -> None:
        wake = asyncio.Event()
        wakeup = self._wakeup = Wakeup(self._engine, wake) if Wakeup.possible(self._engine) else None
        if wakeup is not None:
            wakeup.start()
        try:
            await self._publish_forever(wake, wakeup)
        finally:
            if wakeup is not None:
                wakeup.stop()

    async def _publish_forever(self, wake: asyncio.Event, wakeup: Wakeup | None) -> None:
        failing = False
        while True:
            wake.clear()  # a notification from here on means another round
            more = False
            connection = self._connection()
            if connection is not None and not connection.closed.done():
                try:
                    more = await self.round(connection)
                    if failing:
                        log.info("live events: reading the outbox again")
                    failing = False
                except BrokerUnavailable as exc:  # the events wait for their lease, then go on the next connection
                    log.info("live events: %s; publishing again on the next connection", exc)
                except TimeoutError:
                    log.warning(
                        "live events: the broker acknowledged nothing within %.0fs; publishing again in %.0fs",
                        self._ack_timeout,
                        self._lease,
                    )
                except SQLAlchemyError as exc:
                    if not failing:
                        log.warning("live events: cannot read the outbox (%s); retrying", exc)
                    failing = True
                except Exception:  # anything else: logged, and the events wait in the outbox for the next round
                    log.exception("live events: a round failed; trying again")
                    failing = True
            if not more:
                pause = self._poll
                if failing:
                    pause = FAILING_POLL_SECONDS
                elif wakeup is not None and wakeup.listening:
                    pause = max(self._poll, LISTENING_POLL_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), pause)

    async def round(self, connection: BrokerConnection) -> bool:
        """Publish what waits (a page at most) and delete it once acknowledged; True when a page was full."""
        events = await self._database.call(
            partial(live_events.claim, self._engine, limit=PAGE, lease_seconds=self._lease)
        )
        if not events:
            return False
        acknowledged = connection.publish_confirmed([(event.topic, event.payload) for event in events])
        await asyncio.wait_for(acknowledged, self._ack_timeout)
        await self._database.call(partial(live_events.delete_published, self._engine, [event.id for event in events]))
        self.published += len(events)
        if self._counter is not None:
            self._counter(len(events))
        return len(events) == PAGE
