"""``POST /v1/auth/token``: exchange a username and password for a bearer token with an expiry;
``POST /v1/auth/logout`` and ``/logout/all``: end the token the request presents, or every token of the caller
(as Matrix's ``/logout`` and ``/logout/all``).

The token works for the API (``Authorization: Bearer``) and as the MQTT password, so a mobile app stores
the token, never the password. Failed logins are throttled per user and per address (429).

A logout deletes the token(s) and writes a ``tokens_revoked`` directory event in the same transaction, so
whoever remembers verified credentials forgets the caller's at once: this process before it answers, every
other API process when its change watch reads the event (api/changes.py), and the broker before it trusts
remembered credentials for a new MQTT connection (broker/directory_watch.py). MQTT connections already open
stay open: the broker checks a token when a client connects, as it does a token's expiry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import ColumnElement
from sqlmodel import col, delete

from api.deps import AUTH_ERRORS, BODY_ERRORS, CurrentUser, LimiterDep, SessionDep, bearer, check_login, forget_tokens
from api.schemas import TokenRequest, TokenResponse
from switchboard import directory, tokens
from switchboard.tables import ApiToken, DirectoryChange

router = APIRouter(prefix="/v1/auth", tags=["auth"])

BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={**AUTH_ERRORS, **BODY_ERRORS},
)
def create_token(request: Request, session: SessionDep, limiter: LimiterDep, body: TokenRequest) -> TokenResponse:
    user = check_login(session, limiter, request, body.username, body.password)
    ttl = timedelta(hours=request.app.state.settings.token_ttl_hours)
    token, expires = tokens.issue(session, user.name, ttl)
    session.commit()
    return TokenResponse(access_token=token, expires_at=expires)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **AUTH_ERRORS,
        400: {"description": "The request did not present a bearer token (HTTP Basic has none to end)."},
    },
)
def logout(request: Request, session: SessionDep, user: CurrentUser, token: BearerToken) -> Response:
    """End the bearer token this request presents: from the answer on, every API process refuses it (401) and
    the broker refuses it as the MQTT password of a new connection. The caller's other tokens keep working;
    MQTT connections already open stay open."""
    if token is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail="log out with the token to end as Authorization: Bearer (or end them all: POST /v1/auth/logout/all)",
        )
    digest = tokens.digest(token.credentials)
    _revoke(request, session, user.name, col(ApiToken.token_hash) == digest)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout/all", status_code=status.HTTP_204_NO_CONTENT, responses=AUTH_ERRORS)
def logout_all(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """End every token of the caller (all its devices), as ``/logout`` ends one. Its password still works."""
    _revoke(request, session, user.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _revoke(request: Request, session: SessionDep, user: str, *which: ColumnElement[bool]) -> None:
    """Delete ``user``'s tokens (those matching ``which``, else all), write the event, commit, forget them here."""
    session.exec(delete(ApiToken).where(col(ApiToken.user_name) == user, *which))
    directory.record(session, DirectoryChange.TOKENS_REVOKED, user)
    session.commit()
    forget_tokens(request, user)
