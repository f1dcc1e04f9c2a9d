"""Monthly partitions of the messages table on Postgres (migration 0006), kept ahead of the clock.

``messages`` is partitioned by range of ``stored_at``: one partition per calendar month (UTC), named
``messages_YYYY_MM``, plus ``messages_default`` for anything outside them. A month's partition must
exist before its first message: once rows of a month sit in the default partition, Postgres refuses to
create that month's partition. :func:`ensure_message_partitions` therefore creates the current month
and :data:`MONTHS_AHEAD` more; ``db upgrade`` runs it, and the bridge runs it on start and every
:data:`CHECK_EVERY_SECONDS` (:func:`keep_message_partitions`).

Old months can be detached and archived (``ALTER TABLE messages DETACH PARTITION messages_2025_01``)
without touching the others; see docs/scaling.md. SQLite has no partitions; everything here is a
no-op there.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

MONTHS_AHEAD = 2
CHECK_EVERY_SECONDS = 6 * 3600
DEFAULT_PARTITION = "messages_default"

_IS_PARTITIONED = text(
    "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
    "WHERE c.relname = 'messages' AND c.relnamespace = current_schema()::regnamespace)"
)
_PARTITIONS = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'messages' "
    "AND p.relnamespace = current_schema()::regnamespace ORDER BY c.relname"
)


def is_partition(name: str | None) -> bool:
    """Whether a table name is one of the messages table's partitions (which the models do not describe)."""
    return name is not None and (name == DEFAULT_PARTITION or re.fullmatch(r"messages_\d{4}_\d{2}", name) is not None)


def skip_partitions(name: str | None, kind: str, _parent_names: object) -> bool:
    """Alembic ``include_name`` hook: compare and autogenerate without the partitions."""
    return not (kind == "table" and is_partition(name))


def month_start(moment: date | datetime) -> datetime:
    """Midnight UTC on the first of ``moment``'s month."""
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_name(start: datetime) -> str:
    return f"messages_{start.year:04d}_{start.month:02d}"


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    return bool(connection.execute(_IS_PARTITIONED).scalar())


def partitions(connection: Connection) -> list[str]:
    """The names of the messages table's partitions (empty on SQLite)."""
    if not is_partitioned(connection):
        return []
    return [str(name) for name in connection.execute(_PARTITIONS).scalars()]


def create_month_partition(connection: Connection, start: datetime) -> bool:
    """Create the partition of the month starting at ``start`` unless it exists; False when it cannot be made
    because rows of that month already sit in the default partition (logged; those rows stay readable)."""
    name = partition_name(start)
    statement = sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF messages FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), sql.Literal(start), sql.Literal(next_month(start))
    )
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with connection.begin_nested(), raw.cursor() as cursor:
            cursor.execute(statement)
    except psycopg.errors.CheckViolation:
        log.warning(
            "messages: cannot create partition %s: rows of that month are in %s already; they stay there "
            "(readable as any other); see docs/scaling.md to move them",
            name,
            DEFAULT_PARTITION,
        )
        return False
    return True


def ensure_message_partitions(
    connection: Connection, *, now: datetime | None = None, since: datetime | None = None
) -> list[str]:
    """Create the monthly partitions from ``since`` (default: this month) to :data:`MONTHS_AHEAD` months on;
    returns the names of those it created. Nothing on SQLite or an unpartitioned table."""
    if not is_partitioned(connection):
        return []
    existing = set(connection.execute(_PARTITIONS).scalars())  # partitioned, checked just above
    month = month_start(since or now or datetime.now(UTC))
    last = month_start(now or datetime.now(UTC))
    for _ in range(MONTHS_AHEAD):
        last = next_month(last)
    created = []
    while month <= last:
        name = partition_name(month)
        if name not in existing and create_month_partition(connection, month):
            created.append(name)
        month = next_month(month)
    if created:
        log.info("messages: created partition(s) %s", ", ".join(created))
    return created


async def keep_message_partitions(engine: Engine) -> None:
    """Run :func:`ensure_message_partitions` now and every :data:`CHECK_EVERY_SECONDS`, until cancelled."""
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            await asyncio.to_thread(_ensure, engine)
        except Exception:  # the next round tries again; the default partition takes the rows meanwhile
            log.exception("messages: could not check the monthly partitions; trying again later")
        await asyncio.sleep(CHECK_EVERY_SECONDS)


def _ensure(engine: Engine) -> None:
    with engine.begin() as connection:
        ensure_message_partitions(connection)
