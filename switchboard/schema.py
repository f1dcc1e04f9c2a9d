"""The few tables the broker reads and writes, as SQLAlchemy Core table clauses, and the names and types they
share with the ORM tables of switchboard.tables.

The broker's process never imports the ORM (SQLModel, ``sqlalchemy.orm``) or Alembic: about 30 MB of
resident memory it would carry for a handful of primary-key reads (``tests/test_import_graph.py`` guards
this). The clauses name only the columns the broker uses; ``tests/test_schema.py`` checks each one against
the ORM table of the same name, so the two cannot drift apart. Migrations stay in
``switchboard/migrations``; :data:`SCHEMA_HEAD` is the newest one's revision, so a service checks the
schema without loading Alembic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Integer,
    String,
    TableClause,
    TypeDecorator,
    column,
    table,
)
from sqlalchemy.types import TypeEngine

#: The revision of the newest migration in switchboard/migrations (checked by tests/test_schema.py).
SCHEMA_HEAD = "0013"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class _SqliteUtcDateTime(TypeDecorator[datetime]):
    """SQLite forgets a timestamp's zone: values read back are marked UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def UtcDateTime() -> TypeEngine[datetime]:  # named as a type: it is used as one, like DateTime
    """A timezone-aware timestamp. Postgres returns them aware, so there it is plain ``DateTime``: no Python
    call per value read (a sync page reads 300); on SQLite, values read back are marked UTC."""
    return DateTime(timezone=True).with_variant(_SqliteUtcDateTime(), "sqlite")


class Role(StrEnum):
    """What an account is for: a person, an administrator, or a Switchboard service (the bridge)."""

    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"


class DirectoryChange(StrEnum):
    """What happened to a user or a membership; the broker and /v1/sync act on these."""

    USER_CREATED = "user_created"
    MEMBER_ADDED = "member_added"
    MEMBER_REMOVED = "member_removed"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    USER_DELETED = "user_deleted"
    PASSWORD_RESET = "password_reset"  # noqa: S105 (an event name, not a secret)
    #: ``user_name`` blocked or unblocked someone (``group_name`` is None: whom stays private to the blocker).
    BLOCK_ADDED = "block_added"
    BLOCK_REMOVED = "block_removed"
    #: ``user_name`` logged out (``POST /v1/auth/logout`` or ``/logout/all``): some or all of its tokens were
    #: deleted. Whoever remembers verified credentials of the user forgets them (the broker, the API's
    #: token caches); nobody is disconnected.
    TOKENS_REVOKED = "tokens_revoked"


def _table(name: str, *columns: tuple[str, object]) -> TableClause:
    return table(name, *(column(key, kind) for key, kind in columns))  # type: ignore[arg-type]


users = _table("users", ("name", String()), ("password_hash", String()), ("role", String()), ("disabled", Boolean()))
group_members = _table("group_members", ("group_name", String()), ("user_name", String()))
api_tokens = _table("api_tokens", ("token_hash", String()), ("user_name", String()), ("expires_at", UtcDateTime()))
login_failures = _table(
    "login_failures",
    ("user_name", String()),
    ("address", String()),
    ("failures", Integer()),
    ("first_at", UtcDateTime()),
    ("last_at", UtcDateTime()),
)
directory_events = _table(
    "directory_events",
    ("position", BigInteger()),
    ("change", String()),
    ("user_name", String()),
    ("group_name", String()),
)
stream_positions = _table("stream_positions", ("name", String()), ("position", BigInteger()))
blocks = _table("blocks", ("blocker", String()), ("blocked", String()))
dm_members = _table("dm_members", ("conversation_id", String()), ("user_name", String()))
conversations = _table("conversations", ("id", String()), ("last_seq", BigInteger()))
alembic_version = _table("alembic_version", ("version_num", String()))

#: Every clause above, for the test that compares them with the ORM tables.
CORE_TABLES = (
    users,
    group_members,
    api_tokens,
    login_failures,
    directory_events,
    stream_positions,
    blocks,
    dm_members,
    conversations,
)
