"""Per-user token buckets: the chat's rate limit (``mqtt.publish_rate`` per second, ``mqtt.publish_burst`` at once).

Each user has a bucket of ``burst`` tokens that refills at ``rate`` tokens a second; a message takes one, and a
message finding the bucket empty is refused. One bucket per user, over all its connections: a second device (or
a reconnect) does not double what it may send. Pure: the caller gives the time (``time.monotonic()``).
"""

from __future__ import annotations


class TokenBuckets:
    """The buckets of every user who sent recently; a full bucket is the same as none (forgotten when many)."""

    #: Past this many users, the buckets that have refilled are dropped (they hold nothing a new one would not).
    MAX_USERS = 100_000

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (rate {rate}, burst {burst})")
        self.rate = rate
        self.burst = float(burst)
        #: user -> [tokens left, when they were counted]
        self._buckets: dict[str, list[float]] = {}

    def take(self, user: str, now: float) -> bool:
        """Take one token from ``user``'s bucket at time ``now``: False when it is empty (over the limit)."""
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= self.MAX_USERS:
                self._forget_full(now)
            self._buckets[user] = [self.burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _forget_full(self, now: float) -> None:
        full = [user for user, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for user in full:
            del self._buckets[user]
        if len(self._buckets) >= self.MAX_USERS:  # all busy: start again rather than grow without bound
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
