"""Bearer tokens: issued by the API for a username and password, accepted by the API (``Authorization:
Bearer``) and by the broker as the MQTT password, so a mobile app never stores the password.

A token is ``sbt_`` followed by 43 random URL-safe characters; only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session

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


def user_for(session: Session, token: str) -> User | None:
    """The enabled user a live token belongs to, or None."""
    if not looks_like_token(token):
        return None
    row = session.get(ApiToken, _digest(token))
    if row is None or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_name)
    return user if user is not None and not user.disabled else None
