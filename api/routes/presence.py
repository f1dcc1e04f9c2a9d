"""``GET /v1/presence?user=a&user=b``: online or offline, and last seen, of users the caller may see.

A user's presence is shown only to users who share a conversation with it (a DM with messages, or a group)
and never across a block, either way (switchboard.social, the rule the broker applies over MQTT too). A
user the caller may not see answers the same 404 as a user that does not exist, so presence does not tell
strangers who has an account."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlmodel import col, select

from api.deps import AUTH_ERRORS, CurrentUser, SessionDep
from api.schemas import PresenceList, PresencePublic
from switchboard import accounts, presence, social
from switchboard.tables import Presence, utcnow
from switchboard.topics import NAME_PATTERN

router = APIRouter(prefix="/v1/presence", tags=["presence"])

MAX_USERS = 100


HIDDEN = (
    "A user does not exist, or shares no conversation with the caller (a DM with messages, or a group), or one "
    "of the two blocked the other: the same answer for each, so presence does not reveal who has an account."
)


@router.get("", response_model=PresenceList, responses={**AUTH_ERRORS, 404: {"description": HIDDEN}})
def get_presence(
    request: Request,
    session: SessionDep,
    caller: CurrentUser,
    user: Annotated[
        list[Annotated[str, Query(pattern=f"^{NAME_PATTERN}$")]],
        Query(min_length=1, max_length=MAX_USERS, description="User names, 1 to 100.", examples=[["alice"]]),
    ],
) -> PresenceList:
    names = list(dict.fromkeys(user))
    known = accounts.existing_users(session, names)
    visible = social.visible_presence(session.connection(), caller.name, known) if known else set()
    hidden = [name for name in names if name not in visible]
    if hidden:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no such user(s): {', '.join(sorted(hidden))} (presence is shown only for users you share a "
            "conversation with)",
        )
    rows = {p.user_name: p for p in session.exec(select(Presence).where(col(Presence.user_name).in_(names))).all()}
    ttl, now = request.app.state.presence_settings.online_ttl_seconds, utcnow()
    return PresenceList(presence=[_public(name, rows.get(name), now, ttl) for name in names])


def _public(name: str, row: Presence | None, now: datetime, ttl: float | None) -> PresencePublic:
    """A user's presence; an "online" older than presence.online_ttl_seconds is offline (switchboard.presence)."""
    if row is None:
        return PresencePublic(user=name, status="offline", last_seen=None)
    status = presence.shown_status(row.status, row.last_seen, now, ttl)
    return PresencePublic.model_validate({"user": name, "status": status, "last_seen": row.last_seen})
