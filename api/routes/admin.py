"""``/v1/admin``: users and groups, for administrators only.

Changes are recorded as directory events in the same transaction (switchboard.accounts), so the broker
acts on them at once: a removed member stops receiving the group on its open connections; a disabled,
deleted or password-reset user is disconnected.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from api.callers import Caller
from api.deps import ACCOUNT_ERRORS, ADMIN_ERRORS, BODY_ERRORS, AdminUser, SessionDep, forget_tokens
from api.schemas import (
    GroupCreate,
    GroupPublic,
    GroupsList,
    MediaUsage,
    MediaUsageList,
    PasswordReset,
    UserCreate,
    UserPublic,
    UsersList,
    UserUpdate,
)
from switchboard import accounts, media
from switchboard.tables import Role, User
from switchboard.topics import NAME_PATTERN

router = APIRouter(prefix="/v1/admin", tags=["admin"])

UserName = Annotated[str, Path(pattern=f"^{NAME_PATTERN}$", description="A user name.", examples=["carol"])]
GroupName = Annotated[str, Path(pattern=f"^{NAME_PATTERN}$", description="A group name.", examples=["family"])]


@router.get("/users", response_model=UsersList, responses=ADMIN_ERRORS)
def list_users(session: SessionDep, _admin: AdminUser) -> UsersList:
    """Every account, by name."""
    return UsersList(users=[_user(u) for u in accounts.list_users(session)])


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses={**ACCOUNT_ERRORS, **BODY_ERRORS},
)
def create_user(session: SessionDep, _admin: AdminUser, body: UserCreate) -> UserPublic:
    """A new account. Names are never reused, not even after the account is deleted."""
    user = accounts.create_user(session, body.name, body.password, Role(body.role))
    session.commit()
    return _user(user)


@router.patch("/users/{name}", response_model=UserPublic, responses={**ACCOUNT_ERRORS, **BODY_ERRORS})
def update_user(
    request: Request, session: SessionDep, admin: AdminUser, name: UserName, body: UserUpdate
) -> UserPublic:
    """Disable or enable an account. Disabling closes its MQTT connections and revokes its tokens (enabling
    it again does not revive them)."""
    _not_self_or_service(session, admin, name, "disable")
    user = accounts.set_disabled(session, name, body.disabled)
    session.commit()
    forget_tokens(request, name)
    return _user(user)


@router.post(
    "/users/{name}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**ACCOUNT_ERRORS, **BODY_ERRORS},
)
def reset_password(
    request: Request, session: SessionDep, admin: AdminUser, name: UserName, body: PasswordReset
) -> None:
    """Set a new password: the user's tokens are revoked and its MQTT connections closed."""
    _not_self_or_service(session, admin, name, "reset the password of")
    accounts.reset_password(session, name, body.password)
    session.commit()
    forget_tokens(request, name)


@router.delete(
    "/users/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=ACCOUNT_ERRORS
)
def delete_user(request: Request, session: SessionDep, admin: AdminUser, name: UserName) -> None:
    """Delete an account, its memberships and tokens; the messages it sent stay in their conversations."""
    _not_self_or_service(session, admin, name, "delete")
    accounts.delete_user(session, name)
    session.commit()
    forget_tokens(request, name)


@router.get("/groups", response_model=GroupsList, responses=ADMIN_ERRORS)
def list_groups(session: SessionDep, _admin: AdminUser) -> GroupsList:
    """Every group with its members."""
    return GroupsList(
        groups=[GroupPublic(name=g.name, members=m, created_at=g.created_at) for g, m in accounts.list_groups(session)]
    )


@router.post(
    "/groups",
    response_model=GroupPublic,
    status_code=status.HTTP_201_CREATED,
    responses={**ACCOUNT_ERRORS, **BODY_ERRORS},
)
def create_group(session: SessionDep, _admin: AdminUser, body: GroupCreate) -> GroupPublic:
    """A new group; every member must be an existing user."""
    group = accounts.create_group(session, body.name, dict.fromkeys(body.members))
    session.commit()
    return GroupPublic(
        name=group.name, members=accounts.group_members(session, group.name), created_at=group.created_at
    )


@router.put(
    "/groups/{group}/members/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ACCOUNT_ERRORS,
)
def add_member(session: SessionDep, _admin: AdminUser, group: GroupName, name: UserName) -> None:
    """Add a member (nothing happens if it already is one)."""
    accounts.add_member(session, group, name)
    session.commit()


@router.delete(
    "/groups/{group}/members/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ACCOUNT_ERRORS,
)
def remove_member(session: SessionDep, _admin: AdminUser, group: GroupName, name: UserName) -> None:
    """Remove a member; the broker stops delivering the group's messages to it at once."""
    if not accounts.remove_member(session, group, name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{name!r} is not a member of group {group!r}")
    session.commit()


def _user(user: User) -> UserPublic:
    return UserPublic.model_validate(
        {"name": user.name, "role": user.role, "disabled": user.disabled, "created_at": user.created_at}
    )


def _not_self_or_service(session: SessionDep, admin: Caller, name: str, action: str) -> None:
    if name == admin.name:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"you cannot {action} your own account")
    target = session.get(User, name)
    if target is not None and target.role == Role.SERVICE:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"{name!r} is a service account (the bridge's); it is managed by `switchboard up` and bridge.*",
        )


@router.get("/media", response_model=MediaUsageList, responses=ADMIN_ERRORS)
def media_usage(session: SessionDep, _admin: AdminUser) -> MediaUsageList:
    """Storage used per user: files uploaded and their bytes, largest first."""
    return MediaUsageList(users=[MediaUsage(user=u.user, files=u.files, bytes=u.bytes) for u in media.usage(session)])
