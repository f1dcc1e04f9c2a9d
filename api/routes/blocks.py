"""``PUT``/``DELETE /v1/blocks/{user}`` and ``GET /v1/blocks``: the caller's blocks (switchboard.blocking).

A blocked user's DMs to the blocker are refused by the broker (with a notice that does not say "blocked"),
and neither sees the other's presence or typing; group messages still flow. Both changes are idempotent:
``PUT`` of a user already blocked answers the existing block, ``DELETE`` of one not blocked answers 204.
Like Matrix's ignored users and Zulip's muted users, the list is private to the blocker: the blocked user
is never told, and ``/v1/sync`` carries no block (a client reads ``GET /v1/blocks`` when it starts).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from sqlalchemy.exc import IntegrityError

from api.deps import AUTH_ERRORS, CurrentUser, SessionDep
from api.schemas import BlockPublic, BlocksList
from switchboard import blocking
from switchboard.tables import Block, User
from switchboard.topics import NAME_PATTERN

router = APIRouter(prefix="/v1/blocks", tags=["blocks"])

BlockedUser = Annotated[
    str, Path(pattern=f"^{NAME_PATTERN}$", description="The user to block or unblock.", examples=["mallory"])
]
UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "No such user."}}


@router.get("", response_model=BlocksList, responses=AUTH_ERRORS)
def list_blocks(session: SessionDep, user: CurrentUser) -> BlocksList:
    """Everyone the caller blocked, by name."""
    return BlocksList(blocks=[_public(row) for row in blocking.blocks_of(session, user.name)])


@router.put(
    "/{user}",
    response_model=BlockPublic,
    responses={**AUTH_ERRORS, **UNKNOWN, 400: {"description": "The caller named itself."}},
)
def block(session: SessionDep, caller: CurrentUser, user: BlockedUser) -> BlockPublic:
    """Block ``user``: its DMs to the caller are refused, and presence and typing are hidden both ways.
    Blocking a user already blocked changes nothing (the answer keeps the first ``blocked_at``)."""
    if user == caller.name:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="you cannot block yourself: name another user")
    if session.get(User, user) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"user {user!r} does not exist")
    row, created = blocking.block(session, caller.name, user)
    answer = _public(row)
    if created:
        try:
            session.commit()
        except IntegrityError:  # blocked by a concurrent request: the outcome is the same
            session.rollback()
            found = session.get(Block, (caller.name, user))
            answer = _public(found) if found is not None else answer
    return answer


@router.delete(
    "/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**AUTH_ERRORS, **UNKNOWN},
)
def unblock(session: SessionDep, caller: CurrentUser, user: BlockedUser) -> Response:
    """Lift the caller's block of ``user``; 204 whether or not it was blocked (a block of an account deleted
    since is lifted too)."""
    if blocking.unblock(session, caller.name, user):
        session.commit()
    elif session.get(User, user) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"user {user!r} does not exist")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _public(row: Block) -> BlockPublic:
    return BlockPublic.model_validate({"user": row.blocked, "blocked_at": row.created_at})
