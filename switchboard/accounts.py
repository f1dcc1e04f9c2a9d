"""Users, groups and passwords: the queries every service shares.

Passwords are hashed with argon2 (argon2-cffi). Functions take a session and never commit:
the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import literal, tuple_, union_all
from sqlmodel import Session, col, select

from switchboard import directory, lookups, tokens
from switchboard.errors import AccountError, InvalidAccount, UnknownAccount
from switchboard.passwords import MAX_PASSWORD_CHARS, hash_password, verify_password, waste_time
from switchboard.tables import ApiToken, DirectoryChange, DmMember, Group, GroupMember, Presence, Role, User
from switchboard.topics import Conversation, Kind, is_valid_name


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The enabled user with this name and password (or a live token of theirs, see switchboard.tokens)."""
    if tokens.looks_like_token(password):
        holder = tokens.user_for(session, password)
        return holder if holder is not None and holder.name == name else None
    user = session.get(User, name) if is_valid_name(name) else None
    if user is None or len(password) > MAX_PASSWORD_CHARS:
        waste_time(password)
        return None
    if not verify_password(user.password_hash, password) or user.disabled:
        return None
    return user


def _check_name(name: str, what: str) -> None:
    if not is_valid_name(name):
        raise InvalidAccount(f"{what} name {name!r} is invalid: use 1 to 64 letters, digits, '_', '.' or '-'")


def create_user(session: Session, name: str, password: str, role: Role = Role.USER) -> User:
    """Add a user; AccountError if the name is taken or invalid."""
    _check_name(name, "user")
    if session.get(User, name) is not None:
        raise AccountError(f"user {name!r} already exists: pick another name")
    if directory.was_deleted(session, name):
        raise AccountError(
            f"user {name!r} was deleted and names are not reused (the new account would see the old one's "
            "conversations): pick another name"
        )
    user = User(name=name, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    directory.record(session, DirectoryChange.USER_CREATED, name)
    return user


def ensure_service_account(session: Session, name: str, password: str) -> User:
    """Create the service account, or reset its password and role, so the bridge can log in."""
    _check_name(name, "service account")
    user = session.get(User, name)
    if user is None:
        return create_user(session, name, password, Role.SERVICE)
    if user.role != Role.SERVICE:
        raise AccountError(
            f"{name!r} is an existing {user.role} account and cannot become the bridge's service "
            "account: set SWITCHBOARD_BRIDGE__USERNAME to another name"
        )
    if not verify_password(user.password_hash, password):
        user.password_hash = hash_password(password)
    user.disabled = False
    session.add(user)
    return user


def list_users(session: Session) -> Sequence[User]:
    """Every user, by name."""
    return session.exec(select(User).order_by(col(User.name))).all()


def user_exists(session: Session, name: str) -> bool:
    """True for an existing, enabled user."""
    user = session.get(User, name) if is_valid_name(name) else None
    return user is not None and not user.disabled


def existing_users(session: Session, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are existing, enabled users (one query)."""
    wanted = list(set(names))
    if not wanted:
        return set()
    rows = session.exec(select(User.name).where(col(User.name).in_(wanted), col(User.disabled).is_(False)))
    return set(rows.all())


def memberships(session: Session, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which ``(group, user)`` pairs are memberships (one query)."""
    wanted = list(set(pairs))
    if not wanted:
        return set()
    rows = session.exec(
        select(GroupMember.group_name, GroupMember.user_name).where(
            tuple_(col(GroupMember.group_name), col(GroupMember.user_name)).in_(wanted)
        )
    )
    return {(group, user) for group, user in rows.all()}


def create_group(session: Session, name: str, members: Iterable[str] = ()) -> Group:
    """Add a group with its first members; AccountError for a taken name or an unknown member."""
    _check_name(name, "group")
    if session.get(Group, name) is not None:
        raise AccountError(f"group {name!r} already exists: pick another name")
    group = Group(name=name)
    session.add(group)
    session.flush()
    for member in members:
        add_member(session, name, member)
    return group


def add_member(session: Session, group: str, user: str) -> bool:
    """Make ``user`` a member of ``group``; False when it already was (nothing changes)."""
    _existing_group(session, group)
    _existing_user(session, user)
    if session.get(GroupMember, (group, user)) is not None:
        return False
    session.add(GroupMember(group_name=group, user_name=user))
    session.flush()
    directory.record(session, DirectoryChange.MEMBER_ADDED, user, group)
    return True


def remove_member(session: Session, group: str, user: str) -> bool:
    """Take ``user`` out of ``group``; False when it was not a member. The broker stops delivering the
    group's messages to the user's open connections as soon as this commits."""
    _existing_group(session, group)
    membership = session.get(GroupMember, (group, user))
    if membership is None:
        return False
    session.delete(membership)
    session.flush()
    directory.record(session, DirectoryChange.MEMBER_REMOVED, user, group)
    return True


def list_groups(session: Session) -> list[tuple[Group, list[str]]]:
    """Every group, by name, with its members' names."""
    groups = session.exec(select(Group).order_by(col(Group.name))).all()
    members: dict[str, list[str]] = {group.name: [] for group in groups}
    for group_name, user_name in session.exec(
        select(GroupMember.group_name, GroupMember.user_name).order_by(col(GroupMember.user_name))
    ).all():
        members.setdefault(group_name, []).append(user_name)
    return [(group, members[group.name]) for group in groups]


def set_disabled(session: Session, name: str, disabled: bool) -> User:
    """Disable (or enable again) a user. A disabled user cannot log in, its tokens are revoked (enabling it
    again does not bring them back: they may be what got it disabled) and the broker disconnects it; its
    history stays."""
    user = _existing_user(session, name)
    if user.disabled != disabled:
        user.disabled = disabled
        session.add(user)
        if disabled:
            _revoke_tokens(session, name)
        change = DirectoryChange.USER_DISABLED if disabled else DirectoryChange.USER_ENABLED
        directory.record(session, change, name)
    return user


def reset_password(session: Session, name: str, password: str) -> None:
    """Set a new password; the user's tokens are revoked and its open connections closed."""
    user = _existing_user(session, name)
    user.password_hash = hash_password(password)
    session.add(user)
    _revoke_tokens(session, name)
    directory.record(session, DirectoryChange.PASSWORD_RESET, name)


def delete_user(session: Session, name: str) -> None:
    """Delete the account, its memberships, tokens and presence. Messages it sent stay in their
    conversations (they belong to the other people too), and the name is never given out again."""
    user = _existing_user(session, name)
    for membership in session.exec(select(GroupMember).where(GroupMember.user_name == name)).all():
        remove_member(session, membership.group_name, name)
    _revoke_tokens(session, name)
    presence = session.get(Presence, name)
    if presence is not None:
        session.delete(presence)
    session.delete(user)
    session.flush()
    directory.record(session, DirectoryChange.USER_DELETED, name)


def _revoke_tokens(session: Session, name: str) -> None:
    for token in session.exec(select(ApiToken).where(ApiToken.user_name == name)).all():
        session.delete(token)


def _existing_user(session: Session, name: str) -> User:
    user = session.get(User, name) if is_valid_name(name) else None
    if user is None:
        raise UnknownAccount(f"user {name!r} does not exist: add it with `switchboard user add`")
    return user


def _existing_group(session: Session, name: str) -> Group:
    group = session.get(Group, name) if is_valid_name(name) else None
    if group is None:
        raise UnknownAccount(f"group {name!r} does not exist: create it with `switchboard group create`")
    return group


def group_members(session: Session, group: str) -> list[str]:
    """Names of the members of ``group``."""
    rows = session.exec(select(GroupMember.user_name).where(GroupMember.group_name == group))
    return sorted(rows.all())


def is_member(session: Session, group: str, user: str) -> bool:
    """True when ``user`` belongs to ``group``."""
    return session.get(GroupMember, (group, user)) is not None


def conversation_exists(session: Session, conversation: Conversation) -> bool:
    """True when the conversation's users (dm) or group exist."""
    if conversation.kind is Kind.DM:
        return all(session.get(User, name) is not None for name in conversation.members)
    return session.get(Group, conversation.group) is not None


def readable_conversation_ids(user: str) -> Any:
    """The ids of ``user``'s DMs and of its groups' conversations, as a subquery (for ``IN``)."""
    return union_all(
        select(col(DmMember.conversation_id)).where(col(DmMember.user_name) == user),
        select(literal("group:") + col(GroupMember.group_name)).where(col(GroupMember.user_name) == user),
    )


def may_read(session: Session, user: str, conversation: Conversation) -> bool:
    """True when ``user`` takes part in ``conversation``."""
    if conversation.kind is Kind.DM:
        return user in conversation.members
    return is_member(session, conversation.group, user)


__all__ = [
    "add_member",
    "authenticate",
    "conversation_exists",
    "create_group",
    "create_user",
    "delete_user",
    "ensure_service_account",
    "group_members",
    "hash_password",
    "is_member",
    "list_groups",
    "list_users",
    "may_read",
    "readable_conversation_ids",
    "remove_member",
    "reset_password",
    "set_disabled",
    "user_exists",
    "verify_password",
]


class SessionDirectory:
    """The ACL's questions (switchboard.acl.Directory), answered from the database through a session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def user_exists(self, name: str) -> bool:
        return user_exists(self._session, name)

    def is_member(self, group: str, user: str) -> bool:
        return is_member(self._session, group, user)

    def is_blocked(self, blocker: str, blocked: str) -> bool:
        return lookups.is_blocked(self._session.connection(), blocker, blocked)

    def shares_conversation(self, user: str, other: str) -> bool:
        connection = self._session.connection()
        if other in lookups.dm_partners(connection, user):
            return True
        return not lookups.groups_of(connection, user).isdisjoint(lookups.groups_of(connection, other))
