"""The broker's reads of users, groups and directory events: SQLAlchemy Core statements on a connection (no
ORM objects, no ORM import; see switchboard.schema). Each is one indexed query, compiled once and cached
by SQLAlchemy. Login checks read many users at once (:func:`password_users`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, select

from switchboard.schema import (
    DirectoryChange,
    Role,
    blocks,
    conversations,
    directory_events,
    dm_members,
    group_members,
    stream_positions,
    users,
)
from switchboard.topics import is_valid_name


@dataclass(frozen=True, slots=True)
class UserRow:
    """What a login needs to know of an account."""

    name: str
    password_hash: str
    role: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class DirectoryEvent:
    """One committed directory event (switchboard.directory writes them)."""

    position: int
    change: DirectoryChange
    user_name: str
    group_name: str | None = None


def password_users(connection: Connection, names: Iterable[str]) -> dict[str, UserRow]:
    """The accounts of these names that exist (enabled or not), by name: one query."""
    wanted = sorted({name for name in names if is_valid_name(name)})
    if not wanted:
        return {}
    query = select(users.c.name, users.c.password_hash, users.c.role, users.c.disabled)
    rows = connection.execute(query.where(users.c.name.in_(wanted))).all()
    return {row[0]: UserRow(row[0], row[1], row[2], bool(row[3])) for row in rows}


def enabled_role(connection: Connection, name: str) -> str | None:
    """The role of the enabled user of this name; None when there is none (or it is disabled)."""
    if not is_valid_name(name):
        return None
    query = select(users.c.role).where(users.c.name == name, users.c.disabled.is_(False))
    role: str | None = connection.execute(query).scalar()
    return role


def has_enabled_admin(connection: Connection) -> bool:
    """True when some enabled account has the admin role (``switchboard up`` says how to make the first one)."""
    query = select(users.c.name).where(users.c.role == Role.ADMIN.value, users.c.disabled.is_(False)).limit(1)
    return connection.execute(query).first() is not None


def user_exists(connection: Connection, name: str) -> bool:
    """True for an existing, enabled user."""
    return enabled_role(connection, name) is not None


def is_member(connection: Connection, group: str, user: str) -> bool:
    """True when ``user`` belongs to ``group``."""
    query = select(group_members.c.user_name).where(group_members.c.group_name == group)
    return connection.execute(query.where(group_members.c.user_name == user)).first() is not None


def blocked_users(connection: Connection) -> frozenset[str]:
    """Every user someone blocked (few: most decisions need to know no more than that their user is not one)."""
    return frozenset(connection.execute(select(blocks.c.blocked).distinct()).scalars().all())


def blockers_of(connection: Connection, user: str) -> frozenset[str]:
    """The users who blocked ``user``."""
    return frozenset(connection.execute(select(blocks.c.blocker).where(blocks.c.blocked == user)).scalars().all())


def is_blocked(connection: Connection, blocker: str, blocked: str) -> bool:
    """Whether ``blocker`` blocked ``blocked``."""
    query = select(blocks.c.blocker).where(blocks.c.blocker == blocker, blocks.c.blocked == blocked)
    return connection.execute(query).first() is not None


def groups_of(connection: Connection, user: str) -> frozenset[str]:
    """The groups ``user`` belongs to."""
    query = select(group_members.c.group_name).where(group_members.c.user_name == user)
    return frozenset(connection.execute(query).scalars().all())


def members_of(connection: Connection, group: str) -> frozenset[str]:
    """The members of ``group``."""
    query = select(group_members.c.user_name).where(group_members.c.group_name == group)
    return frozenset(connection.execute(query).scalars().all())


def dm_partners(connection: Connection, user: str) -> frozenset[str]:
    """The users ``user`` has a DM conversation with messages with."""
    mine, theirs = dm_members.alias("mine"), dm_members.alias("theirs")
    query = (
        select(theirs.c.user_name)
        .select_from(mine)
        .join(theirs, and_(theirs.c.conversation_id == mine.c.conversation_id, theirs.c.user_name != user))
        .join(conversations, conversations.c.id == mine.c.conversation_id)
        .where(mine.c.user_name == user, conversations.c.last_seq > 0)
    )
    return frozenset(connection.execute(query).scalars().all())


def stream_head(connection: Connection, stream: str) -> int:
    """The last committed position of one change stream (0 before its first change)."""
    position = connection.execute(select(stream_positions.c.position).where(stream_positions.c.name == stream)).scalar()
    return int(position or 0)


def directory_events_after(connection: Connection, position: int, limit: int = 1000) -> list[DirectoryEvent]:
    """Committed directory events after ``position``, oldest first."""
    query = (
        select(directory_events.c.position, directory_events.c.change, directory_events.c.user_name)
        .add_columns(directory_events.c.group_name)
        .where(directory_events.c.position > position)
        .order_by(directory_events.c.position)
        .limit(limit)
    )
    return [
        DirectoryEvent(int(row[0]), DirectoryChange(row[1]), row[2], row[3]) for row in connection.execute(query).all()
    ]
