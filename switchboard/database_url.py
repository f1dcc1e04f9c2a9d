"""What ``database_url`` may name: an SQLite file (Python's own driver) or Postgres through psycopg 3.

One parser serves the settings check (``switchboard config check`` and every command's start) and the
engine (:func:`switchboard.db.make_engine`), so a URL the check accepts is one the engine can open.
Nothing else is installed: ``mysql://``, ``postgresql+psycopg2://`` or ``postgresql+asyncpg://`` would
fail later with a less helpful error, so they are refused here.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ACCEPTED = (
    "sqlite:///PATH (a file, relative to the current folder; sqlite:////abs/path for an absolute one) or "
    "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE (postgresql://... means the same)"
)
_SQLITE_DRIVERS = ("", "pysqlite")
_POSTGRES_DRIVERS = ("", "psycopg")


def parse(text: str) -> URL:
    """The SQLAlchemy URL ``text`` names, with the driver made explicit (``postgresql://`` is psycopg 3).

    Raises ValueError saying what is wrong (:data:`ACCEPTED` says what is right)."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError("not a database URL") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in _SQLITE_DRIVERS:
        return url
    if backend == "postgresql" and driver in _POSTGRES_DRIVERS:
        return url.set(drivername="postgresql+psycopg")
    raise ValueError(f"{url.drivername}:// is not supported")


def masked(text: str) -> str:
    """``text`` with any password hidden, for messages and ``config show``."""
    try:
        return make_url(text).render_as_string(hide_password=True)
    except ArgumentError:
        return text if "@" not in text else "********"


def sqlite_file(url: URL) -> Path | None:
    """The file an SQLite URL names (relative as written), or None (Postgres, or SQLite in memory)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)
