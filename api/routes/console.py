"""Small routes behind the web app and the operator console: ``GET /v1/me`` for any logged-in user (who
am I, my role, my groups); ``/v1/admin/stats``, ``/online``, ``/rejected`` and ``/config`` for
administrators only (the caller's role is checked on each, as on every ``/v1/admin`` route)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlmodel import col, select

from api.console_metrics import snapshot
from api.deps import ADMIN_ERRORS, AUTH_ERRORS, AdminUser, CurrentUser, SessionDep
from api.schemas import Schema
from switchboard import presence
from switchboard.tables import GroupMember, Presence, RejectedMessage, utcnow

router = APIRouter(prefix="/v1", tags=["console"])

#: How much of a rejected payload the console shows.
PREVIEW_BYTES = 200


class Me(Schema):
    """The caller."""

    name: str = Field(examples=["alice"])
    role: str = Field(examples=["user"])
    groups: list[str] = Field(description="The groups the caller is a member of.", examples=[["family"]])


class Stats(Schema):
    """The services' metrics now: totals (counters) and gauges; null for a service whose metrics are off."""

    at: float = Field(description="Unix time of the reading.", examples=[1796000000.5])
    values: dict[str, float | None] = Field(
        examples=[{"connections": 2, "messages_in": 10, "messages_out": 12, "bridge_lag": 0}]
    )


class Online(Schema):
    """Users whose presence is online, by name."""

    users: list[str] = Field(examples=[["alice"]])


class Rejected(Schema):
    """One payload the bridge could not store."""

    id: int = Field(examples=[1])
    topic: str = Field(examples=["dm/bob/alice"])
    reason: str = Field(examples=["empty payload: ..."])
    received_at: datetime
    preview: str = Field(description="The first bytes of the payload as text.", examples=["{oops"])


class RejectedList(Schema):
    """The newest rejected payloads first."""

    rejected: list[Rejected]


@router.get("/me", response_model=Me, responses=AUTH_ERRORS)
def me(session: SessionDep, user: CurrentUser) -> Me:
    """Who the caller is, its role, and its groups (the web app subscribes to each)."""
    groups = session.exec(
        select(GroupMember.group_name).where(GroupMember.user_name == user.name).order_by(col(GroupMember.group_name))
    ).all()
    return Me(name=user.name, role=str(user.role), groups=list(groups))


@router.get("/admin/stats", response_model=Stats, responses=ADMIN_ERRORS)
def stats(request: Request, _admin: AdminUser) -> Stats:
    """Connections, messages in and out, the bridge's lag and its stored and rejected totals, and the API's
    request count and total answer time, from the services' own metrics."""
    return Stats(at=time.time(), values=snapshot(request.app.state.metric_sources))


@router.get("/admin/online", response_model=Online, responses=ADMIN_ERRORS)
def online(request: Request, session: SessionDep, _admin: AdminUser) -> Online:
    """Who is online now (their presence as the bridge recorded it, an "online" gone stale not counted)."""
    query = select(Presence.user_name).where(Presence.status == "online")
    cutoff = presence.online_since(utcnow(), request.app.state.presence_settings.online_ttl_seconds)
    if cutoff is not None:
        query = query.where(col(Presence.last_seen) >= cutoff)
    names = session.exec(query.order_by(col(Presence.user_name))).all()
    return Online(users=list(names))


@router.get("/admin/rejected", response_model=RejectedList, responses=ADMIN_ERRORS)
def rejected(
    session: SessionDep,
    _admin: AdminUser,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.", examples=[50])] = 50,
) -> RejectedList:
    """Payloads kept in rejected_messages, with the reason each could not be stored."""
    rows = session.exec(select(RejectedMessage).order_by(col(RejectedMessage.id).desc()).limit(limit)).all()
    return RejectedList(
        rejected=[
            Rejected(
                id=row.id or 0,
                topic=row.topic,
                reason=row.reason,
                received_at=row.received_at,
                preview=row.payload[:PREVIEW_BYTES].decode("utf-8", errors="replace"),
            )
            for row in rows
        ]
    )


@router.get("/admin/config", responses=ADMIN_ERRORS)
def config(request: Request, _admin: AdminUser) -> dict[str, Any]:
    """The effective configuration of the running services, secrets masked (as ``switchboard config show``)."""
    effective: dict[str, Any] = request.app.state.effective_config
    return effective
