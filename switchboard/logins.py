"""Failed-login throttling, one limiter for MQTT CONNECTs and HTTP logins, kept in the database (table
``login_failures``) so the broker and the API share it when they run as separate processes.

The design keeps password guessing slow without letting a stranger lock the owner out:

- **Per (user, address), a hard limit.** After ``login.max_failures`` (10) failed logins for one user
  name from one client address within ``login.window_seconds`` (15 minutes, counted from the first of
  them), that address is refused for that user until the window closes. The owner on another address is
  not concerned.
- **Per user, a backoff that only slows.** Once a user has ``login.backoff_after`` (3) failures in the
  window from all addresses together, every address *that has itself failed* for that user waits after
  its own last failure: 1 s, doubling with each further failure of the user, at most
  ``login.backoff_max_seconds`` (10 s). An address with no failure of its own is never refused, so the
  owner's correct password from another address always works, however hard the account is attacked; the
  owner who mistyped waits at most the cap. A guesser spreading over many addresses gets one try per
  address per backoff, and at most ``max_failures`` per address per window.
- **No per-address limit across users.** Counting all failures of an address locked out everyone behind
  one NAT or proxy; an address is only ever refused for the names it has failed on.

While refused, no password is checked: MQTT answers CONNACK "not authorized" (3.1.1 has no better code)
and logs it, HTTP answers 429 with ``Retry-After``. The limiter behaves the same for names that exist
and names that do not, so it tells nobody which users exist. Names that can never be a user (not
:func:`switchboard.topics.is_valid_name`) are not recorded.

Database cost: one indexed read before checking a password (:meth:`LoginThrottle.waits` reads a whole batch
of logins at once: the broker's concurrent CONNECTs share one query); a success writes only when that read
found failures of this user and address (to clear them); a failure writes one row. Rows of closed
windows are deleted now and then by failures. Concurrent attempts from one address that all start before
the first of them fails are each checked (argon2 bounds how many that can be). SQLAlchemy Core only (no
ORM), so the broker's process does not load the ORM for it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, insert, select, update

from switchboard.db import connection_scope
from switchboard.errors import StoreError
from switchboard.schema import login_failures, utcnow
from switchboard.settings import LoginSettings
from switchboard.topics import is_valid_name

T = TypeVar("T")

MAX_ADDRESS_CHARS = 64
#: One failure in this many also deletes every row whose window has closed.
SWEEP_ONE_IN = 64

_failures = login_failures.c


def backoff(policy: LoginSettings, user_failures: int) -> float:
    """Seconds a failing address waits after its own last failure, for a user with this many failures."""
    if user_failures < policy.backoff_after:
        return 0.0
    return min(policy.backoff_max_seconds, 2.0 ** min(user_failures - policy.backoff_after, 30))


class Throttled(Exception):
    """This address may not try this user's password now; ``retry_after`` whole seconds from now."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after


def login_key(user: str, address: str) -> tuple[str, str] | None:
    """The key failures of this login are counted under; None for a name that can never be a user (not
    counted, never throttled)."""
    return (user, address[:MAX_ADDRESS_CHARS]) if is_valid_name(user) else None


class LoginThrottle:
    """Guards password checks: :meth:`attempt` refuses (``Throttled``), checks, and records the outcome.

    The broker checks many logins at once with the parts: :meth:`waits` (one query for a batch), then
    :meth:`record` for each outcome."""

    def __init__(self, engine: Engine, policy: LoginSettings) -> None:
        self._engine = engine
        self._policy = policy

    def attempt(self, user: str, address: str, check: Callable[[], T | None]) -> T | None:
        """``check()`` (the password check, blocking: call this in a worker thread from async code) unless
        ``address`` is throttled for ``user``; its None result is recorded as a failure. Raises
        :class:`Throttled` without calling ``check``."""
        key = login_key(user, address)
        if key is None:
            return check()
        seen = self.waits([key])[key]
        if seen is not None and seen > 0:
            raise Throttled(math.ceil(seen))
        result = check()
        self.record(key, ok=result is not None, seen=seen)
        return result

    def waits(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float | None]:
        """For each ``(user, address)`` key (from :func:`login_key`), the seconds that address must still
        wait for that user (0: may try), or None when it has no failures recorded (the common case). One
        query for all of them."""
        wanted = set(keys)
        if not wanted:
            return {}
        now = utcnow()
        window = timedelta(seconds=self._policy.window_seconds)
        query = select(login_failures).where(_failures.user_name.in_(sorted({user for user, _ in wanted})))
        with connection_scope(self._engine) as connection:
            rows = connection.execute(query).all()
        totals: dict[str, int] = {}
        mine: dict[tuple[str, str], tuple[int, datetime, datetime]] = {}
        for user, address, failures, first_at, last_at in rows:
            if first_at > now - window:
                totals[user] = totals.get(user, 0) + failures
            if (user, address) in wanted:
                mine[(user, address)] = (failures, first_at, last_at)
        return {key: self._wait(mine.get(key), totals.get(key[0], 0), now, window) for key in wanted}

    def _wait(
        self, row: tuple[int, datetime, datetime] | None, total: int, now: datetime, window: timedelta
    ) -> float | None:
        if row is None:
            return None
        failures, first_at, last_at = row
        if first_at + window <= now:
            return 0.0
        if failures >= self._policy.max_failures:
            return (first_at + window - now).total_seconds()
        delay = backoff(self._policy, total)
        return max(0.0, (last_at + timedelta(seconds=delay) - now).total_seconds())

    def record(self, key: tuple[str, str], *, ok: bool, seen: float | None) -> None:
        """The outcome of a password check that :meth:`waits` allowed (``seen`` is what it said): a failure
        is counted; a success clears the failures it found."""
        user, address = key
        if not ok:
            self._failed(user, address)
        elif seen is not None:
            with connection_scope(self._engine) as connection:
                connection.execute(delete(login_failures).where(_key(user, address)))

    def _failed(self, user: str, address: str) -> None:
        try:
            with connection_scope(self._engine) as connection:
                self._count_failure(connection, user, address)
        except StoreError as exc:
            if not exc.conflict:
                raise
            # a concurrent first failure inserted the row: count this one in it
            with connection_scope(self._engine) as connection:
                self._count_failure(connection, user, address)

    def _count_failure(self, connection: Connection, user: str, address: str) -> None:
        now = utcnow()
        cutoff = now - timedelta(seconds=self._policy.window_seconds)
        counted = connection.execute(
            update(login_failures)
            .where(_key(user, address), _failures.first_at > cutoff)
            .values(failures=_failures.failures + 1, last_at=now)
        )
        if counted.rowcount:
            return
        new_window = {"failures": 1, "first_at": now, "last_at": now}  # a new window
        renewed = connection.execute(update(login_failures).where(_key(user, address)).values(**new_window))
        if not renewed.rowcount:
            connection.execute(insert(login_failures).values(user_name=user, address=address, **new_window))
        if random.randrange(SWEEP_ONE_IN) == 0:
            connection.execute(delete(login_failures).where(_failures.last_at <= cutoff))


def _key(user: str, address: str) -> ColumnElement[bool]:
    return and_(_failures.user_name == user, _failures.address == address)
