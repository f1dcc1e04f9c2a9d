"""Whether a user counts as online: its last presence, unless that is an "online" older than
``presence.online_ttl_seconds`` (on a broker whose wills cannot be trusted, clients renew it; silence means
the connection is gone). Used by the API, the console and the bridge's notification outbox alike."""

from __future__ import annotations

from datetime import datetime, timedelta


def online_since(now: datetime, ttl_seconds: float | None) -> datetime | None:
    """The oldest ``last_seen`` an "online" may have and still count; None when "online" never goes stale."""
    return None if ttl_seconds is None else now - timedelta(seconds=ttl_seconds)


def shown_status(status: str, last_seen: datetime, now: datetime, ttl_seconds: float | None) -> str:
    """``status`` as it should be shown now: "offline" for an "online" that went stale."""
    cutoff = online_since(now, ttl_seconds)
    if status == "online" and cutoff is not None and last_seen < cutoff:
        return "offline"
    return status
