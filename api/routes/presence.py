"""``GET /v1/presence?user=a&user=b``: online or offline, and last seen (any logged-in user may ask)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlmodel import col, select

from api.deps import AUTH_ERRORS, CurrentUser, SessionDep
from api.schemas import PresenceList, PresencePublic
from switchboard import accounts, presence
from switchboard.tables import Presence, utcnow
from switchboard.topics import NAME_PATTERN

router = APIRouter(prefix="/v1/presence", tags=["presence"])

MAX_USERS = 100


@router.get("", response_model=PresenceList, responses={**AUTH_ERRORS, 404: {"description": "A user does not exist."}})
def get_presence(
    request: Request,
    session: SessionDep,
    _caller: CurrentUser,
    user: Annotated[
        list[Annotated[str, Query(pattern=f"^{NAME_PATTERN}$")]],
        Query(min_length=1, max_length=MAX_USERS, description="User names, 1 to 100.", examples=[["alice"]]),
    ],
) -> PresenceList:
    names = list(dict.fromkeys(user))
    unknown = sorted(set(names) - accounts.existing_users(session, names))
    if unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such user(s): {', '.join(unknown)}")
    rows = {p.user_name: p for p in session.exec(select(Presence).where(col(Presence.user_name).in_(names))).all()}
    ttl, now = request.app.state.presence_settings.online_ttl_seconds, utcnow()
    return PresenceList(presence=[_public(name, rows.get(name), now, ttl) for name in names])


def _public(name: str, row: Presence | None, now: datetime, ttl: float | None) -> PresencePublic:
    """A user's presence; an "online" older than presence.online_ttl_seconds is offline (switchboard.presence)."""
    if row is None:
        return PresencePublic(user=name, status="offline", last_seen=None)
    status = presence.shown_status(row.status, row.last_seen, now, ttl)
    return PresencePublic.model_validate({"user": name, "status": status, "last_seen": row.last_seen})
