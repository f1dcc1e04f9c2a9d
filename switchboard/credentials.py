"""Credentials verified recently, remembered for a while: the broker's (a reconnect storm, every phone of a
cell dropping and coming back at once, costs one HMAC per client instead of an argon2 hash or a database
query each) and the API's for the external broker calling its hooks.

Only successes are remembered, as an HMAC under a key made at start-up (never the secret itself). An
entry ends after ``mqtt.credentials_cache_seconds``, at the expiry of the token it was made from, or at
once when a directory event says the user was disabled, deleted or given a new password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class VerifiedCredentials(Generic[T]):
    """User name to (HMAC of the secret, what the check found, until when)."""

    MAX_ENTRIES = 200_000

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._entries: dict[str, tuple[bytes, T, float]] = {}

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).digest()

    def check(self, name: str, secret: str) -> T | None:
        """What was found, if these exact credentials were verified recently."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        digest, who, until = entry
        if until <= time.monotonic():
            del self._entries[name]
            return None
        return who if hmac.compare_digest(digest, self._digest(secret)) else None

    def remember(self, name: str, secret: str, who: T, *, seconds: float | None = None) -> None:
        """Remember a success for ``ttl`` seconds (or fewer, when the secret itself expires sooner)."""
        lifetime = self._ttl if seconds is None else min(self._ttl, seconds)
        if lifetime <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[name] = (self._digest(secret), who, time.monotonic() + lifetime)

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)
