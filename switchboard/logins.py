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

Database cost: one primary-key read before checking a password; a success writes only when that read
found failures of this user and address (to clear them); a failure writes one row. Rows of closed
windows are deleted now and then by failures. Concurrent attempts from one address that all start before
the first of them fails are each checked (argon2 bounds how many that can be).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, Engine, and_, delete, func, update
from sqlmodel import Session, col, select

from switchboard.db import session_scope, transact_once_more_on_conflict
from switchboard.settings import LoginSettings
from switchboard.tables import LoginFailure, utcnow
from switchboard.topics import is_valid_name

T = TypeVar("T")

MAX_ADDRESS_CHARS = 64
#: One failure in this many also deletes every row whose window has closed.
SWEEP_ONE_IN = 64


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


class LoginThrottle:
    """Guards password checks: :meth:`attempt` refuses (``Throttled``), checks, and records the outcome."""

    def __init__(self, engine: Engine, policy: LoginSettings) -> None:
        self._engine = engine
        self._policy = policy

    def attempt(self, user: str, address: str, check: Callable[[], T | None]) -> T | None:
        """``check()`` (the password check, blocking: call this in a worker thread from async code) unless
        ``address`` is throttled for ``user``; its None result is recorded as a failure. Raises
        :class:`Throttled` without calling ``check``."""
        if not is_valid_name(user):
            return check()
        address = address[:MAX_ADDRESS_CHARS]
        now = utcnow()
        seen = self._wait(user, address, now)
        if seen is not None and seen > 0:
            raise Throttled(math.ceil(seen))
        result = check()
        if result is None:
            self._failed(user, address)
        elif seen is not None:
            with session_scope(self._engine) as session:
                session.execute(delete(LoginFailure).where(_key(user, address)))
        return result

    def _wait(self, user: str, address: str, now: datetime) -> float | None:
        """Seconds this address must still wait for this user (0: may try); None when it has no failures
        recorded (the common case: one primary-key read)."""
        window = timedelta(seconds=self._policy.window_seconds)
        with session_scope(self._engine) as session:
            row = session.get(LoginFailure, (user, address))
            if row is None:
                return None
            if row.first_at + window <= now:
                return 0.0
            if row.failures >= self._policy.max_failures:
                return (row.first_at + window - now).total_seconds()
            total = session.exec(
                select(func.coalesce(func.sum(LoginFailure.failures), 0)).where(
                    col(LoginFailure.user_name) == user, col(LoginFailure.first_at) > now - window
                )
            ).one()
        delay = backoff(self._policy, int(total))
        return max(0.0, (row.last_at + timedelta(seconds=delay) - now).total_seconds())

    def _failed(self, user: str, address: str) -> None:
        def record(session: Session) -> None:
            now = utcnow()
            cutoff = now - timedelta(seconds=self._policy.window_seconds)
            counted = session.execute(
                update(LoginFailure)
                .where(_key(user, address), col(LoginFailure.first_at) > cutoff)
                .values(failures=col(LoginFailure.failures) + 1, last_at=now)
            )
            if counted.rowcount:  # type: ignore[attr-defined]
                return
            row = session.get(LoginFailure, (user, address))
            if row is None:
                row = LoginFailure(user_name=user, address=address, first_at=now, last_at=now)
            row.failures, row.first_at, row.last_at = 1, now, now  # a new window
            session.add(row)
            if random.randrange(SWEEP_ONE_IN) == 0:
                session.execute(delete(LoginFailure).where(col(LoginFailure.last_at) <= cutoff))

        transact_once_more_on_conflict(self._engine, record)


def _key(user: str, address: str) -> ColumnElement[bool]:
    return and_(col(LoginFailure.user_name) == user, col(LoginFailure.address) == address)
