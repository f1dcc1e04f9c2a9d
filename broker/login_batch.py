"""Checks the credentials of concurrent CONNECTs together: one worker-thread hop, one login-throttle read
and one query per kind of secret for a whole batch.

A reconnect storm or a broker restart brings thousands of first logins at once. Checked one by one, each
took two ORM queries in a worker thread of its own, and every query handed the GIL back and forth with the
event loop (a few ms of waiting each while the loop was busy): 2-3 ms of CPU and far more of latency per
login. Here the logins that arrive while a batch is being checked wait for the next one, so under load a
batch holds every login that came in meanwhile, and alone a login is checked at once (a batch of one).

What one batch costs: :meth:`LoginThrottle.waits` for all of them (one indexed read of ``login_failures``),
:func:`switchboard.tokens.holders` for the token passwords, :func:`switchboard.lookups.password_users` for
the others (then argon2 for each, the batch's hashes on every core at once: argon2 releases the GIL, and one
hash takes 50-250 ms); writes only for failures (and for a success that clears earlier failures). The
throttle's rules are unchanged (switchboard/logins.py): a throttled login is refused before its password is
looked at.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from switchboard import lookups, tokens
from switchboard.acl import Identity
from switchboard.db import connection_scope
from switchboard.errors import StoreError
from switchboard.logins import LoginThrottle, Throttled, login_key
from switchboard.passwords import MAX_PASSWORD_CHARS, verify_password, waste_time
from switchboard.schema import Role, utcnow

log = logging.getLogger(__name__)

#: At most this many logins in one batch (one ``IN (...)`` list; more wait for the next batch).
MAX_BATCH = 500


@dataclass(slots=True)
class Verified:
    """A login whose credentials were good: who it is, and for how long the secret stays good (a token's
    remaining life; None for a password)."""

    identity: Identity
    seconds_left: float | None = None


@dataclass(slots=True)
class _Login:
    name: str
    password: str
    address: str
    outcome: Verified | BaseException | None = None


class LoginBatcher:
    """``await check(name, password, address)``: Verified, None (bad credentials), or raises
    :class:`Throttled` or :class:`StoreError`."""

    def __init__(self, engine: Engine, throttle: LoginThrottle) -> None:
        self._engine = engine
        self._throttle = throttle
        self._waiting: list[tuple[_Login, asyncio.Future[Verified | None]]] = []
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def check(self, name: str, password: str, address: str) -> Verified | None:
        future: asyncio.Future[Verified | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((_Login(name, password, address), future))
        if not self._running:
            self._running = True
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                logins = [login for login, _ in batch]
                try:
                    await asyncio.to_thread(self.check_batch, logins)
                except Exception as exc:
                    failure: BaseException = (
                        exc if isinstance(exc, StoreError) else StoreError(f"cannot check logins: {exc}")
                    )
                    for login in logins:
                        login.outcome = failure
                for login, future in batch:
                    if future.done():  # the connection went away meanwhile
                        continue
                    if isinstance(login.outcome, BaseException):
                        future.set_exception(login.outcome)
                    else:
                        future.set_result(login.outcome)
        finally:
            self._running = False

    def check_batch(self, logins: list[_Login]) -> None:
        """Decide every login of the batch (blocking: runs in a worker thread); sets each ``outcome``."""
        keys = {id(login): login_key(login.name, login.address) for login in logins}
        waits = self._throttle.waits(key for key in keys.values() if key is not None)
        allowed: list[_Login] = []
        for login in logins:
            key = keys[id(login)]
            seen = None if key is None else waits[key]
            if seen is not None and seen > 0:
                login.outcome = Throttled(math.ceil(seen))
            else:
                allowed.append(login)
        if not allowed:
            return
        with connection_scope(self._engine) as connection:  # database errors leave as StoreError
            held = tokens.holders(connection, (login.password for login in allowed))
            named = [login.name for login in allowed if not tokens.looks_like_token(login.password)]
            accounts = lookups.password_users(connection, named)
        now = utcnow()
        for login in allowed:
            if tokens.looks_like_token(login.password):
                login.outcome = _verify(login, held, accounts, now)
        passwords = [login for login in allowed if not tokens.looks_like_token(login.password)]
        if len(passwords) > 1:  # argon2 releases the GIL: one batch's hashes on every core, not one after another
            with ThreadPoolExecutor(max_workers=min(len(passwords), os.cpu_count() or 1)) as pool:
                verdicts = list(pool.map(lambda login: _verify(login, held, accounts, now), passwords))
            for login, verdict in zip(passwords, verdicts, strict=True):
                login.outcome = verdict
        elif passwords:
            passwords[0].outcome = _verify(passwords[0], held, accounts, now)
        for login in allowed:
            key = keys[id(login)]
            if key is None:
                continue
            try:
                self._throttle.record(key, ok=login.outcome is not None, seen=waits[key])
            except StoreError as exc:
                login.outcome = exc


def _verify(
    login: _Login, held: dict[str, tuple[str, str, datetime]], accounts: dict[str, lookups.UserRow], now: datetime
) -> Verified | None:
    """The credentials' verdict (argon2 for a password; the token's row for a token)."""
    if tokens.looks_like_token(login.password):
        found = held.get(login.password)
        if found is None or found[0] != login.name:
            return None
        return Verified(Identity(found[0], Role(found[1])), (found[2] - now).total_seconds())
    account = accounts.get(login.name)
    if account is None or len(login.password) > MAX_PASSWORD_CHARS:
        waste_time(login.password)
        return None
    if not verify_password(account.password_hash, login.password) or account.disabled:
        return None
    return Verified(Identity(account.name, Role(account.role)))
