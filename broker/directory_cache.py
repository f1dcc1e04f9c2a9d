"""The ACL's facts (users, memberships, blocks, who shares a conversation with whom), read from the database and
remembered for ``ttl`` seconds (``mqtt.directory_cache_seconds``).

Lookups never block: a miss raises :class:`Miss`, the caller (broker.access) loads the fact in a worker thread
and asks again. So the common decisions (publishing to a known user, receiving a group message) cost no thread
hop and no query. While the database is unreachable, facts already known stay in use, so an outage does not
turn every chat message into a denial. Directory events (broker.directory_watch) forget what they change.

Facts are kept per user where the ACL asks about many pairs (a presence/+ subscriber's retained presence of
thousands of users): a user's groups, a group's members, a user's DM partners are one query each, so deciding
which presence a user sees costs a few queries, not one per other user. Blocks are rare: one set of every
blocked user answers most questions (a user nobody blocked), and only a blocked user's blockers are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from switchboard import lookups

T = TypeVar("T")


class Miss(Exception):
    """A fact the cache does not hold (or holds too old); ``fill`` loads it (blocking: run it in a thread),
    ``keep_stale`` extends the old value when the database cannot be reached."""

    def __init__(self, fill: Callable[[], None], keep_stale: Callable[[], bool]) -> None:
        super().__init__("directory cache miss")
        self.fill = fill
        self.keep_stale = keep_stale


class CachedDirectory:
    """switchboard.acl.Directory, answered from what was read from the database in the last ``ttl`` seconds."""

    MAX_ENTRIES = 200_000

    def __init__(self, engine: Engine, *, ttl: float = 5.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._users: dict[str, tuple[bool, float]] = {}
        self._members: dict[tuple[str, str], tuple[bool, float]] = {}
        self._blocked: dict[str, tuple[frozenset[str], float]] = {}  # "": every blocked user
        self._blockers: dict[str, tuple[frozenset[str], float]] = {}
        self._groups_of: dict[str, tuple[frozenset[str], float]] = {}
        self._members_of: dict[str, tuple[frozenset[str], float]] = {}
        self._dm_partners: dict[str, tuple[frozenset[str], float]] = {}
        #: The earliest expiry of the facts read since :meth:`start_decision`: how long a decision made on them holds.
        self.horizon = 0.0

    def start_decision(self) -> None:
        """Track the facts a decision reads from now on (see ``horizon``)."""
        self.horizon = time.monotonic() + self._ttl

    def user_exists(self, name: str) -> bool:
        return self._fact(self._users, name, lookups.user_exists)

    def is_member(self, group: str, user: str) -> bool:
        hit = self._members.get((group, user))
        if hit is not None and hit[1] > time.monotonic():
            if hit[1] < self.horizon:
                self.horizon = hit[1]
            return hit[0]
        raise Miss(
            lambda: self._load(self._members, (group, user), lambda c: lookups.is_member(c, group, user)),
            lambda: self._extend(self._members, (group, user)),
        )

    def is_blocked(self, blocker: str, blocked: str) -> bool:
        if blocked not in self._fact(self._blocked, "", _blocked_users):
            return False
        return blocker in self._fact(self._blockers, blocked, lookups.blockers_of)

    def shares_conversation(self, user: str, other: str) -> bool:
        if other in self._fact(self._dm_partners, user, lookups.dm_partners):
            return True
        return any(other in self._fact(self._members_of, group, lookups.members_of) for group in self._groups(user))

    def _groups(self, user: str) -> frozenset[str]:
        return self._fact(self._groups_of, user, lookups.groups_of)

    def dm_started(self, sender: str, recipient: str) -> bool:
        """A DM was let through between the two: they now share a conversation. True when that is news to the
        facts held (kept decisions made on them must then be made again)."""
        news = False
        for one, two in ((sender, recipient), (recipient, sender)):
            hit = self._dm_partners.get(one)
            if hit is not None and two not in hit[0]:
                self._dm_partners[one] = (hit[0] | {two}, hit[1])
                news = True
        return news

    def forget_user(self, name: str) -> None:
        """The user changed (disabled, enabled, deleted): ask the database next time."""
        for cache in (self._users, self._blockers, self._groups_of, self._dm_partners):
            cache.pop(name, None)

    def forget_member(self, group: str, user: str) -> None:
        """The membership changed: ask the database next time."""
        self._members.pop((group, user), None)
        self._groups_of.pop(user, None)
        self._members_of.pop(group, None)

    def forget_blocks(self) -> None:
        """Someone blocked or unblocked someone (whom is not said): every user's blocks are read again."""
        self._blocked.clear()
        self._blockers.clear()

    def _fact(self, cache: dict[str, tuple[T, float]], key: str, load: Callable[[Connection, str], T]) -> T:
        hit = cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            if hit[1] < self.horizon:
                self.horizon = hit[1]
            return hit[0]
        raise Miss(lambda: self._load(cache, key, lambda c: load(c, key)), lambda: self._extend(cache, key))

    def _extend(self, cache: dict[Any, tuple[Any, float]], key: Any) -> bool:
        """Keep using a known (expired) fact while the database is down; False when nothing is known."""
        hit = cache.get(key)
        if hit is None:
            return False
        cache[key] = (hit[0], time.monotonic() + self._ttl)
        return True

    def _load(self, cache: dict[Any, tuple[Any, float]], key: Any, load: Callable[[Connection], Any]) -> None:
        with self._engine.connect() as connection:
            value = load(connection)
        if len(cache) >= self.MAX_ENTRIES:
            cache.clear()
        cache[key] = (value, time.monotonic() + self._ttl)


def _blocked_users(connection: Connection, _key: str) -> frozenset[str]:
    return lookups.blocked_users(connection)
