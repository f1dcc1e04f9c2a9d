"""Bearer tokens: issued by the API for a username and password, accepted by the API (``Authorization:
Bearer``) and by the broker as the MQTT password, so a mobile app never stores the password.

A token is ``sbt_`` followed by 43 random URL-safe characters; only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from switchboard.tables import ApiToken, User, utcnow

PREFIX = "sbt_"


def looks_like_token(secret: str) -> bool:
    return secret.startswith(PREFIX) and len(secret) < 100


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, user: str, ttl: timedelta) -> tuple[str, datetime]:
    """A new token for ``user`` and when it expires (the caller commits)."""
    token = PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + ttl
    session.add(ApiToken(token_hash=_digest(token), user_name=user, expires_at=expires))
    return token, expires


def _live_holder(token: str, *columns: Any) -> Any:
    """``SELECT columns`` of the enabled user a live token belongs to (one join)."""
    return (
        select(*columns)
        .join(ApiToken, col(ApiToken.user_name) == col(User.name))
        .where(col(ApiToken.token_hash) == _digest(token), col(ApiToken.expires_at) > utcnow())
        .where(col(User.disabled).is_(False))
    )


def user_for(session: Session, token: str) -> User | None:
    """The enabled user a live token belongs to, or None (one query)."""
    if not looks_like_token(token):
        return None
    user: User | None = session.exec(_live_holder(token, User)).first()
    return user


def holder(session: Session, token: str) -> tuple[str, str, datetime] | None:
    """Name, role and token expiry of the enabled user a live token belongs to: one query returning plain
    columns (no ORM objects), for the broker's connection path."""
    if not looks_like_token(token):
        return None
    row = session.execute(_live_holder(token, col(User.name), col(User.role), col(ApiToken.expires_at))).first()
    return None if row is None else (row[0], row[1], row[2])
