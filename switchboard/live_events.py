"""The live-events outbox: MQTT events made outside the broker, published by the bridge.

The API has no MQTT connection (and services never call each other), yet a read receipt made through
``POST /v1/conversations/{conversation}/read`` must reach the sender and the reader's other devices live,
as one published on MQTT does, and so must an unsend made through ``DELETE /v1/messages/{conversation}/{seq}``
(switchboard.relations.unsend_stored). So the API writes the event (topic and payload) into ``live_events`` in
the transaction that makes the change (:func:`queue`): it exists exactly when the change committed. The
bridge (bridge/live_events.py), woken by a Postgres notification or every ``bridge.live_events_poll_ms``
on SQLite, leases what it finds
(:func:`claim`), publishes it at QoS 1 on its broker connection and deletes it once the broker
acknowledged it (:func:`delete`). A bridge that stops before that leaves the rows to be published again
when their lease runs out (at least once, as QoS 1 is; receipts and unsends are idempotent), and several bridges never
lease the same row at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, delete, func, insert, or_, select, update
from sqlmodel import Session

from switchboard.tables import LiveEvent, utcnow

LIVE_EVENTS = LiveEvent.__table__  # type: ignore[attr-defined]
#: The Postgres notification channel :func:`queue` notifies (at commit) and the bridge listens on.
CHANNEL = "switchboard_live_events"


@dataclass(frozen=True, slots=True)
class Pending:
    """An event to publish."""

    id: int
    topic: str
    payload: bytes


def queue(session: Session, events: Sequence[tuple[str, bytes]]) -> None:
    """Add ``(topic, payload)`` events to ``session``'s transaction (the caller commits). On Postgres the
    transaction also notifies :data:`CHANNEL`, which Postgres delivers at commit: a listening bridge
    publishes at once instead of at its next look."""
    if events:
        now = utcnow()
        session.execute(
            insert(LIVE_EVENTS), [{"topic": topic, "payload": payload, "created_at": now} for topic, payload in events]
        )
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(CHANNEL, "")))


def claim(engine: Engine, *, limit: int, lease_seconds: float) -> list[Pending]:
    """Lease up to ``limit`` events no other bridge holds, oldest first. While the outbox is empty this is
    one read (no write transaction, so SQLite's one writer is not taken 20 times a second)."""
    now = utcnow()
    free = or_(LIVE_EVENTS.c.leased_until.is_(None), LIVE_EVENTS.c.leased_until < now)
    with engine.connect() as connection:
        ids = list(
            connection.execute(select(LIVE_EVENTS.c.id).where(free).order_by(LIVE_EVENTS.c.id).limit(limit)).scalars()
        )
    if not ids:
        return []
    with engine.begin() as connection:
        # ``free`` again: a row another bridge leased meanwhile is skipped (Postgres re-checks the condition
        # of a row it waited for; SQLite has one writer).
        leased = connection.execute(
            update(LIVE_EVENTS)
            .where(LIVE_EVENTS.c.id.in_(ids), free)
            .values(leased_until=now + timedelta(seconds=lease_seconds))
            .returning(LIVE_EVENTS.c.id, LIVE_EVENTS.c.topic, LIVE_EVENTS.c.payload)
        ).all()
    return sorted((Pending(int(row[0]), row[1], bytes(row[2])) for row in leased), key=lambda p: p.id)


def delete_published(engine: Engine, ids: Sequence[int]) -> None:
    """Delete events the broker acknowledged."""
    if ids:
        with engine.begin() as connection:
            connection.execute(delete(LIVE_EVENTS).where(LIVE_EVENTS.c.id.in_(list(ids))))
