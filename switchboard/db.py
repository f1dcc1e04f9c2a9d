"""Database access: engines for SQLite and Postgres, sessions, and schema migrations (Alembic).

Engines are built by the caller (``main()``, a lifespan, a fixture) from settings, never at import.
Importing this module loads neither the ORM nor Alembic (the broker uses only Core, see
switchboard.schema): :func:`session_scope` and :func:`upgrade` import them when called.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from switchboard.database_url import ACCEPTED as ACCEPTED_DATABASE_URLS
from switchboard.database_url import masked as masked_database_url
from switchboard.database_url import parse as parse_database_url
from switchboard.database_url import sqlite_file
from switchboard.errors import ConfigError, StoreError
from switchboard.schema import SCHEMA_HEAD, alembic_version

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlmodel import Session

T = TypeVar("T")

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; for SQLite, the file's folder is created and WAL turned on."""
    try:
        url = parse_database_url(database_url)
    except ValueError as exc:
        raise ConfigError(
            f"bad value for database_url (SWITCHBOARD_DATABASE_URL) = {masked_database_url(database_url)!r}: "
            f"{exc}; use {ACCEPTED_DATABASE_URLS}"
        ) from None
    path = sqlite_file(url)
    if url.get_backend_name() == "sqlite":
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_read_engine(engine: Engine, connections: int) -> Engine:
    """An engine for reads that need no transaction (each statement sees what had committed when it began), for
    ``connections`` threads at most.

    On Postgres it has a pool of its own of ``connections`` connections and no pre-ping: the ping
    ``make_engine``'s pool sends at each checkout is a round trip to the server, as long as a page's query,
    for every read. A pooled connection the server dropped (a restart, a terminated backend) then fails its
    next statement; :func:`read_again_if_dropped` reads once more, on a new connection (the pool replaces every
    connection older than the failure). Dispose of it as of ``engine``. On SQLite it is ``engine`` itself."""
    if engine.dialect.name != "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return create_engine(
        engine.url, pool_size=connections, max_overflow=0, pool_pre_ping=False, isolation_level="AUTOCOMMIT"
    )


def read_again_if_dropped(read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, once more when its pooled connection turned out to be dropped by the server (see
    :func:`make_read_engine`); only for reads, which may run twice."""
    try:
        return read(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.info("a pooled database connection had been closed by the server (%s): reading again", _first_line(exc))
        return read(*args)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # A page cache of 512 KiB per connection, not SQLite's 2 MiB: the services' reads are point lookups and the
    # OS caches the file anyway; at 10,000 users the default cost the broker ~3 MB for the token lookups alone.
    cursor.execute("PRAGMA cache_size=-512")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error.

    SQLAlchemy errors leave as :class:`StoreError` (``retryable`` when the database was unreachable).
    """
    from sqlmodel import Session  # the ORM, loaded by the services that use it (not the broker)

    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise StoreError(f"database unavailable: {_first_line(exc)}", retryable=True) from exc
        except IntegrityError as exc:
            session.rollback()
            raise StoreError(f"conflicting write: {_first_line(exc)}", conflict=True) from exc
        except SQLAlchemyError as exc:
            session.rollback()
            raise StoreError(f"database error: {_first_line(exc)}") from exc


@contextmanager
def connection_scope(engine: Engine) -> Iterator[Connection]:
    """A Core connection in a transaction that commits on success and rolls back on error; SQLAlchemy
    errors leave as :class:`StoreError`, as from :func:`session_scope`."""
    try:
        with engine.begin() as connection:
            yield connection
    except OperationalError as exc:
        raise StoreError(f"database unavailable: {_first_line(exc)}", retryable=True) from exc
    except IntegrityError as exc:
        raise StoreError(f"conflicting write: {_first_line(exc)}", conflict=True) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {_first_line(exc)}") from exc


def transact_once_more_on_conflict(engine: Engine, work: Callable[[Session], T]) -> T:
    """``work`` in one :func:`session_scope`; when it loses a unique-key race to a concurrent writer, once
    more, when it sees that writer's row (get-or-create under concurrency)."""
    try:
        with session_scope(engine) as session:
            return work(session)
    except StoreError as exc:
        if not exc.conflict:
            raise
    with session_scope(engine) as session:
        return work(session)


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision`` (the newest by default), then make sure the messages
    table has its partitions for this month and the next (Postgres)."""
    from alembic import command

    from switchboard import partitions

    config = _alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            partitions.ensure_message_partitions(connection)
    except OperationalError as exc:
        raise StoreError(f"cannot migrate the database: {_first_line(exc)}", retryable=True) from exc


def wait_for_schema(
    engine: Engine, *, what: str, timeout: float | None = None, cancelled: threading.Event | None = None
) -> bool:
    """Block until the database answers and is migrated to the newest revision; capped backoff.

    The services start in any order (docker-compose starts them beside the database and the
    migration job), so they wait, saying what they wait for. ``timeout`` None waits for ever;
    ``cancelled`` set ends the wait early. True when the schema is there, False when cancelled.
    """
    delay, deadline = 0.5, None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            require_current_schema(engine)
            return True
        except StoreError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise
            log.warning("%s: waiting for the database (%s); retrying in %.1fs", what, exc, delay)
            if cancelled is None:
                time.sleep(delay)
            elif cancelled.wait(delay):
                return False
            delay = min(delay * 2, 10.0)


async def wait_for_schema_or_stop(engine: Engine, *, what: str, stop: asyncio.Event) -> bool:
    """:func:`wait_for_schema` in a thread, given up when ``stop`` is set (SIGTERM while waiting).

    True when the schema is there, False when stopped first."""
    cancelled = threading.Event()
    waiting = asyncio.ensure_future(asyncio.to_thread(wait_for_schema, engine, what=what, cancelled=cancelled))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        cancelled.set()
    return await waiting


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def require_current_schema(engine: Engine) -> None:
    """StoreError unless the database is migrated to the newest revision (services do not migrate)."""
    try:
        with engine.connect() as connection:
            current = _current_revision(connection)
    except OperationalError as exc:
        raise StoreError(f"database unreachable: {_first_line(exc)}", retryable=True) from exc
    if current != SCHEMA_HEAD:
        raise StoreError(
            f"the database schema is at revision {current or 'none'}, not {SCHEMA_HEAD}: run `switchboard db upgrade`"
        )


def _current_revision(connection: Connection) -> str | None:
    """What Alembic's ``alembic_version`` table says (None before the first migration), read without Alembic."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(select(alembic_version.c.version_num)).scalars().all()
    return versions[0] if len(versions) == 1 else None
