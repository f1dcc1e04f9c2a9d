"""Bearer tokens: issued by the API for a username and password, accepted by the API (``Authorization:
Bearer``) and by the broker as the MQTT password, so a mobile app never stores the password.

A token is ``sbt_`` followed by 43 random URL-safe characters; only its SHA-256 is stored.

:func:`holders` (Core, many tokens in one query) serves the broker, whose process does not load the ORM;
:func:`issue` and :func:`user_for` (the API's) load the ORM tables when called.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from switchboard.schema import api_tokens, users, utcnow

if TYPE_CHECKING:
    from sqlmodel import Session

    from switchboard.tables import User

PREFIX = "sbt_"


def looks_like_token(secret: str) -> bool:
    return secret.startswith(PREFIX) and len(secret) < 100


def digest(token: str) -> str:
    """What the database stores of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, user: str, ttl: timedelta) -> tuple[str, datetime]:
    """A new token for ``user`` and when it expires (the caller commits)."""
    from switchboard.tables import ApiToken

    token = PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + ttl
    session.add(ApiToken(token_hash=digest(token), user_name=user, expires_at=expires))
    return token, expires


def _live(*columns: Any) -> Any:
    """``SELECT columns`` of live tokens and the enabled users they belong to (one join)."""
    return (
        select(*columns)
        .select_from(api_tokens.join(users, api_tokens.c.user_name == users.c.name))
        .where(api_tokens.c.expires_at > utcnow(), users.c.disabled.is_(False))
    )


def user_for(session: Session, token: str) -> User | None:
    """The enabled user a live token belongs to, or None (one query)."""
    from sqlmodel import col, select

    from switchboard.tables import ApiToken, User

    if not looks_like_token(token):
        return None
    query = (
        select(User)
        .join(ApiToken, col(ApiToken.user_name) == col(User.name))
        .where(col(ApiToken.token_hash) == digest(token), col(ApiToken.expires_at) > utcnow())
        .where(col(User.disabled).is_(False))
    )
    user: User | None = session.exec(query).first()
    return user


def holders(connection: Connection, tokens: Iterable[str]) -> dict[str, tuple[str, str, datetime]]:
    """Name, role and expiry of the enabled user each live token belongs to, by token (tokens that are not
    live are left out): one query for them all, plain columns."""
    by_digest = {digest(token): token for token in tokens if looks_like_token(token)}
    if not by_digest:
        return {}
    query = _live(api_tokens.c.token_hash, users.c.name, users.c.role, api_tokens.c.expires_at)
    rows = connection.execute(query.where(api_tokens.c.token_hash.in_(sorted(by_digest)))).all()
    return {by_digest[found]: (name, role, expires) for found, name, role, expires in rows}
