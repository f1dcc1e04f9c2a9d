"""The notifier's database work on the outbox (:mod:`bridge.outbox`): claims, leases and marks of batches.

Each function is one short transaction whose cost grows with the rows it takes, never with the size of the
outbox, so a burst of 300,000 rows neither holds the database (SQLite has one writer) nor loads the
rows into memory:

* :func:`ready_users` reads, a page at a time, the users whose oldest waiting row has waited long enough
  (``ix_notifications_unbatched``: only rows in no batch yet, ordered by user).
* :func:`claim` takes each user's oldest waiting rows, at most ``limit`` of them, into a new batch with one
  ``UPDATE``, leased to this notifier at once; :func:`lease` takes the next attempt at a batch whose retry
  is due (:func:`due`, ``ix_notifications_due``). The ``UPDATE`` returns the id and conversation of each
  row it took (at most ``limit``), which with the newest row make the batch's body.
* :func:`mark_sent` and :func:`mark_failed` update the rows of batches by their ids
  (``ix_notifications_in_flight``).

Rows in a batch keep its id until sent, and a row in no batch is only taken by an ``UPDATE`` that still
finds it in no batch, so two notifiers never put a row in two batches (on Postgres the second ``UPDATE``
re-checks the row after the first commits).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, func, select, update
from sqlmodel import Session

from switchboard.db import session_scope
from switchboard.tables import Notification, utcnow

OUTBOX = Notification.__table__  # type: ignore[attr-defined]
ROW = OUTBOX.c


@dataclass(frozen=True, slots=True)
class Batch:
    """One attempt at sending a batch: its id, its user, how many attempts failed before, the JSON body."""

    id: str
    user: str
    attempts: int
    body: dict[str, Any]


def ready_users(engine: Engine, ready: datetime, after: str, limit: int) -> list[str]:
    """Up to ``limit`` users after ``after`` (by name) with rows in no batch, the oldest created by ``ready``."""
    query = (
        select(ROW.user_name)
        .where(ROW.batch_id.is_(None), ROW.user_name > after)
        .group_by(ROW.user_name)
        .having(func.min(ROW.created_at) <= ready)
        .order_by(ROW.user_name)
        .limit(limit)
    )
    with session_scope(engine) as session:
        return list(session.execute(query).scalars())


def claim(engine: Engine, users: list[str], *, limit: int, rows: int, lease_seconds: float) -> tuple[list[Batch], int]:
    """In one transaction, a new batch for each of ``users`` in turn, of the user's oldest rows in no batch (at
    most ``limit``), leased for ``lease_seconds``, until the batches hold ``rows`` rows. The batches, and how
    many of ``users`` were served (a user whose rows another notifier took first gets no batch)."""
    batches: list[Batch] = []
    served, claimed = 0, 0
    with session_scope(engine) as session:
        for user in users:
            if served and claimed >= rows:
                break
            served += 1
            batch_id = uuid.uuid4().hex
            oldest = (
                select(ROW.id)
                .where(ROW.user_name == user, ROW.batch_id.is_(None))
                .order_by(ROW.created_at, ROW.id)
                .limit(limit)
                .scalar_subquery()
            )
            taken = session.execute(
                update(OUTBOX)
                .where(ROW.id.in_(oldest), ROW.batch_id.is_(None))
                .values(batch_id=batch_id, next_attempt_at=utcnow() + timedelta(seconds=lease_seconds))
                .returning(ROW.id, ROW.conversation_id)
            ).all()
            if taken:
                batches.append(_batch(session, batch_id, taken, attempts=0))
                claimed += len(taken)
    return batches, served


def due(engine: Engine, limit: int) -> list[str]:
    """Up to ``limit`` ids of unsent batches whose next attempt is due (a failure's backoff or a lease ran
    out), the longest due first."""
    query = (
        select(ROW.batch_id, func.min(ROW.next_attempt_at))
        .where(ROW.batch_id.is_not(None), ROW.sent_at.is_(None), ROW.next_attempt_at <= utcnow())
        .group_by(ROW.batch_id)
        .order_by(func.min(ROW.next_attempt_at))
        .limit(limit)
    )
    with session_scope(engine) as session:
        return [batch_id for batch_id, _ in session.execute(query).all()]


def lease(engine: Engine, batch_ids: list[str], *, lease_seconds: float) -> list[Batch]:
    """In one transaction, take the next attempt at each of these due batches for ``lease_seconds``: another
    notifier that saw it due too finds it leased and skips it; if this one dies mid-send, the lease runs
    out and the batch is due again. The batches taken (not those another notifier took or sent first)."""
    batches: list[Batch] = []
    with session_scope(engine) as session:
        for batch_id in batch_ids:
            now = utcnow()
            taken = session.execute(
                update(OUTBOX)
                .where(ROW.batch_id == batch_id, ROW.sent_at.is_(None), ROW.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=lease_seconds))
                .returning(ROW.id, ROW.conversation_id, ROW.attempts)
            ).all()
            if taken:
                batches.append(_batch(session, batch_id, taken, attempts=max(row.attempts for row in taken)))
    return batches


def mark_sent(engine: Engine, batch_ids: list[str]) -> None:
    """The webhook took these batches: their rows are done."""
    if batch_ids:
        with session_scope(engine) as session:
            session.execute(
                update(OUTBOX).where(ROW.batch_id.in_(batch_ids), ROW.sent_at.is_(None)).values(sent_at=utcnow())
            )


def mark_failed(engine: Engine, retries: list[tuple[str, float]]) -> None:
    """These batches failed: each is due again after its delay in seconds, with one attempt more."""
    if retries:
        with session_scope(engine) as session:
            for batch_id, delay in retries:
                session.execute(
                    update(OUTBOX)
                    .where(ROW.batch_id == batch_id, ROW.sent_at.is_(None))
                    .values(attempts=ROW.attempts + 1, next_attempt_at=utcnow() + timedelta(seconds=delay))
                )


def _batch(session: Session, batch_id: str, rows: Sequence[Row[Any]], attempts: int) -> Batch:
    """The batch's body from the ids and conversations of its rows (just taken, so no second read of them;
    the same on every attempt, since its rows are) and its newest row."""
    newest = session.execute(
        select(ROW.user_name, ROW.conversation_id, ROW.seq, ROW.sender, ROW.preview).where(
            ROW.id == max(row.id for row in rows)
        )
    ).one()
    body = {
        "id": batch_id,
        "user": newest.user_name,
        "conversation": newest.conversation_id,
        "seq": newest.seq,
        "sender": newest.sender,
        "preview": newest.preview,
        "count": len(rows),
        "conversations": sorted({row.conversation_id for row in rows}),
    }
    return Batch(batch_id, newest.user_name, attempts, body)
