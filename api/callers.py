"""Who is calling: bearer tokens verified recently, remembered per API process, so a request that presents
one costs a dictionary lookup instead of a database query (and the thread the query needs).

Only what the database stores of a token is kept (its SHA-256, see switchboard.tokens), with the holder's
name and role. An entry ends:

- at the token's expiry, or ``api.token_cache_seconds`` after it was verified, whichever is first;
- at once, in this process, when this process revokes the holder's tokens (an administrator disables,
  deletes or resets the password of the user: :meth:`TokenCache.forget` runs before the response);
- at once, in this process, when the holder logs out (``POST /v1/auth/logout``, ``/logout/all``);
- in every other API process, when its change watch (api/changes.py) reads the directory event the revocation
  wrote in the same transaction (``user_disabled``, ``user_deleted``, ``password_reset``, ``tokens_revoked``):
  on Postgres within milliseconds (LISTEN/NOTIFY), on SQLite within ``api.sync_poll_seconds``.

A lookup that started before a revocation never stores its (stale) answer after it: the cache counts
revocations, and :meth:`TokenCache.remember` refuses an answer read before the latest one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from switchboard import tokens
from switchboard.schema import DirectoryChange, Role

#: The directory events that revoke a user's tokens.
REVOKING = frozenset(
    {
        DirectoryChange.USER_DISABLED,
        DirectoryChange.USER_DELETED,
        DirectoryChange.PASSWORD_RESET,
        DirectoryChange.TOKENS_REVOKED,
    }
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of a request."""

    name: str
    role: Role


class TokenCache:
    """Token digest to (caller, until when), for bearer tokens verified by the database."""

    MAX_ENTRIES = 100_000

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._revocations = 0
        self._lock = threading.Lock()  # forget() runs in the routes' threads, the rest on the event loop

    def get(self, token: str) -> Caller | None:
        """The holder of ``token`` if it was verified recently and nothing revoked it since."""
        key = tokens.digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            caller, until = entry
            if until <= time.monotonic():
                self._drop(key, caller.name)
                return None
            return caller

    def epoch(self) -> int:
        """How many revocations this process knows of (read before a database lookup)."""
        return self._revocations

    def remember(self, token: str, caller: Caller, expires_at: datetime, epoch: int) -> None:
        """Keep a database answer, unless ``caller``'s tokens were revoked after ``epoch`` was read."""
        lifetime = min(self._ttl, expires_at.timestamp() - time.time())
        if lifetime <= 0:
            return
        key = tokens.digest(token)
        with self._lock:
            if self._revocations != epoch:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
                self._by_user.clear()
            self._entries[key] = (caller, time.monotonic() + lifetime)
            self._by_user.setdefault(caller.name, set()).add(key)

    def forget(self, user: str) -> None:
        """Every token of ``user`` (its tokens were revoked)."""
        with self._lock:
            self._revocations += 1
            for key in self._by_user.pop(user, set()):
                self._entries.pop(key, None)

    def _drop(self, key: str, user: str) -> None:
        self._entries.pop(key, None)
        keys = self._by_user.get(user)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[user]
