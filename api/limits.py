"""Failed-login throttling: per user name and per client address, a sliding window in memory."""

from __future__ import annotations

import time
from collections import deque

WINDOW_SECONDS = 300.0


class LoginLimiter:
    """Counts failures per key (``user:NAME``, ``addr:IP``); a key over its limit is refused until its
    oldest failure leaves the window. An address gets a larger allowance (many users can share one)."""

    MAX_KEYS = 100_000

    def __init__(self, per_user: int, per_address: int, window: float = WINDOW_SECONDS) -> None:
        self._limits = {"user": per_user, "addr": per_address}
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, *keys: str) -> int:
        """Seconds until these keys may try again; 0 when they may now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            failures = self._failures.get(key)
            if failures is None:
                continue
            while failures and failures[0] <= now - self._window:
                failures.popleft()
            if len(failures) >= self._limits[key.split(":", 1)[0]]:
                wait = max(wait, failures[0] + self._window - now)
        return int(wait) + 1 if wait else 0

    def failed(self, *keys: str) -> None:
        if len(self._failures) > self.MAX_KEYS:
            self._failures.clear()
        now = time.monotonic()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
