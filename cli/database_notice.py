"""Which database a command uses, said when it may surprise the operator: a new SQLite file, or no users.

``sqlite:///./var/switchboard.db`` (the default) is relative to the folder the command runs in: run from
another folder, a command quietly makes a new, empty database there. These notices (on stderr, in the log
format) name the file by its absolute path and say why it is there.
"""

from __future__ import annotations

from pathlib import Path

from switchboard import logs
from switchboard.database_url import masked, parse, sqlite_file


def new_sqlite_file(database_url: str) -> Path | None:
    """The absolute path of the SQLite file ``database_url`` names when it does not exist yet, else None
    (an existing file, Postgres, SQLite in memory). Call it before the command opens the database."""
    path = sqlite_file(parse(database_url))
    if path is None or path.exists():
        return None
    return path.absolute()


def _place(database_url: str) -> tuple[str, str]:
    """Where the database is (``at /abs/path``, or the URL with its password hidden), and for a relative
    SQLite path a note saying relative to what."""
    path = sqlite_file(parse(database_url))
    if path is None:
        return masked(database_url), ""
    if path.is_absolute():
        return f"at {path}", ""
    return (
        f"at {path.absolute()}",
        f" (database_url {masked(database_url)} is relative to the current folder {Path.cwd()})",
    )


def say_new(database_url: str) -> None:
    place, note = _place(database_url)
    logs.announce(f"using a new, empty database {place}{note}", warn=True)


def say_no_users(database_url: str) -> None:
    place, note = _place(database_url)
    logs.announce(f"no users in the database {place}{note}", warn=True)
