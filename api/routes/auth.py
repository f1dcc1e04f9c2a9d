"""``POST /v1/auth/token``: exchange a username and password for a bearer token with an expiry.

The token works for the API (``Authorization: Bearer``) and as the MQTT password, so a mobile app stores
the token, never the password. Failed logins are throttled per user and per address (429).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from api.deps import AUTH_ERRORS, BODY_ERRORS, LimiterDep, SessionDep, check_login
from api.schemas import TokenRequest, TokenResponse
from switchboard import tokens

router = APIRouter(prefix="/v1/auth", tags=["auth"])


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
