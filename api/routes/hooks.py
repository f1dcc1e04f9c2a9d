"""Broker hooks: ``POST /v1/mqtt/auth`` and ``POST /v1/mqtt/acl``, so an external broker (Mosquitto with
mosquitto-go-auth's HTTP backend, EMQX's HTTP authentication and authorization) keeps Switchboard's users,
tokens and topic rules.

Both accept JSON or form bodies and always answer 200 with ``{"result": "allow"|"deny", "ok": bool}``:
EMQX reads ``result``; mosquitto-go-auth reads ``ok`` with ``auth_opt_http_response_mode json``. Failed
logins count in the same limiter as the API's and the broker's own (switchboard/logins.py), keyed by the
MQTT client's address when the broker sends it (``peerhost``), else by the broker's.

A PUBLISH to ``dm/{recipient}/{me}`` is refused, as Switchboard's broker refuses it, when the recipient blocked
the sender or ``chat.dm_policy`` (``shared_group``) does not let the sender start that DM. The broker decides
per topic, and EMQX, RabbitMQ and mosquitto-go-auth cache answers: a new block takes effect once the cached
answer expires or the client reconnects (docs/scaling.md, "Blocks and chat.dm_policy").

Only the external broker may ask (the answers say which users exist and who is in which group): it sends
the shared secret ``api.hook_secret`` in ``X-Switchboard-Hook-Secret``, or HTTP Basic of a service account
(a user with the service role, such as the bridge's). Anyone else gets 401 with the same answer whatever
was wrong (429 while its failed Basic logins are throttled).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBasicCredentials
from pydantic import BaseModel, Field, ValidationError

from api.deps import LimiterDep, SessionDep, basic, check_login
from api.schemas import Schema
from switchboard import accounts, jsontext
from switchboard.acl import ANONYMOUS, Action, DmPolicy, Identity, Policy
from switchboard.credentials import VerifiedCredentials
from switchboard.tables import Role, User

SECRET_HEADER = "X-Switchboard-Hook-Secret"  # noqa: S105 (a header name, not a secret)
_REFUSED = (
    f"only the external broker may call the hooks: send api.hook_secret in {SECRET_HEADER}, "
    "or HTTP Basic of a service account"
)


def require_broker(
    request: Request,
    session: SessionDep,
    limiter: LimiterDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    secret: Annotated[
        str | None, Header(alias=SECRET_HEADER, description="api.hook_secret", examples=["the-hook-secret"])
    ] = None,
) -> None:
    """Let the external broker through (the shared secret, or a service account's Basic credentials,
    remembered for a minute so the ACL hook does not hash a password per PUBLISH); 401 for anyone else."""
    configured = request.app.state.settings.hook_secret
    if secret is not None and configured is not None:
        if hmac.compare_digest(secret.encode(), configured.get_secret_value().encode()):
            return
    if credentials is not None:
        known: VerifiedCredentials[str] = request.app.state.hook_callers
        if known.check(credentials.username, credentials.password) is not None:
            return
        try:
            user = check_login(session, limiter, request, credentials.username, credentials.password)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
                raise
            user = None
        if user is not None and user.role == Role.SERVICE:
            known.remember(credentials.username, credentials.password, user.name)
            return
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=_REFUSED, headers={"WWW-Authenticate": 'Basic realm="switchboard"'}
    )


router = APIRouter(prefix="/v1/mqtt", tags=["broker hooks"], dependencies=[Depends(require_broker)])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The JSON body is nested too deeply."},
    401: {"description": "The caller is not the external broker (no hook secret, no service account)."},
    422: {"description": "The body is malformed."},
    429: {"description": "Too many failed logins of the caller's service account from its address."},
}

#: mosquitto-go-auth's "acc": 1 read (a delivery), 2 write (publish), 3 read and write, 4 subscribe.
_GO_AUTH_ACC = {1: (Action.RECEIVE,), 2: (Action.PUBLISH,), 3: (Action.RECEIVE, Action.PUBLISH), 4: (Action.SUBSCRIBE,)}
_EMQX_ACTIONS = {
    "publish": (Action.PUBLISH,),
    "subscribe": (Action.SUBSCRIBE,),
    "all": (Action.PUBLISH, Action.SUBSCRIBE),
}


class HookAuth(Schema):
    """What an external broker asks: may this client connect?"""

    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    password: str = Field(default="", max_length=1024, examples=["alice's password or token"])
    clientid: str = Field(default="", max_length=256, examples=["phone-1"])
    peerhost: str = Field(
        default="",
        max_length=64,
        description="The client's IP address (the login throttle's key).",
        examples=["203.0.113.7"],
    )


class HookAcl(Schema):
    """What an external broker asks: may this client publish or subscribe to this topic?"""

    username: str = Field(default="", max_length=64, examples=["alice"])
    clientid: str = Field(default="", max_length=256, examples=["phone-1"])
    topic: str = Field(min_length=1, max_length=65535, examples=["dm/bob/alice"])
    acc: int | None = Field(
        default=None, ge=1, le=4, description="mosquitto-go-auth: 1 read, 2 write, 3 both, 4 subscribe", examples=[2]
    )
    action: Literal["publish", "subscribe", "all"] | None = Field(
        default=None, description="EMQX: publish, subscribe or all", examples=["publish"]
    )


class HookAnswer(Schema):
    """Allowed or not, in the shapes both go-auth (``ok``) and EMQX (``result``) read."""

    result: str = Field(examples=["allow"])
    ok: bool
    is_superuser: bool = False
    error: str = ""


async def _body(request: Request, model: type[BaseModel]) -> Any:
    content_type = request.headers.get("content-type", "")
    try:
        raw: Any = dict(await request.form()) if "form" in content_type else jsontext.loads(await request.body())
    except jsontext.JsonTooDeep as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="the body is not valid JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=exc.errors(include_url=False)) from None


def _hook_body(model: type[BaseModel], **extra: Any) -> dict[str, Any]:
    """The request body in the OpenAPI document (the handlers read it themselves)."""
    return {
        "requestBody": {
            "required": True,
            "description": "JSON; a form (application/x-www-form-urlencoded) with the same fields works too.",
            "content": {"application/json": {"schema": {**model.model_json_schema(), **extra}}},
        }
    }


def hook_policy(request: Request) -> Policy:
    """The chat scheme as Switchboard's broker applies it, ``chat.dm_policy`` included (a DM to a user who
    blocked the sender is refused whatever the policy); generic topics are the external broker's own business.
    One rule for both brokers: switchboard.acl decides, with the questions switchboard.social answers."""
    return Policy(dm_policy=DmPolicy(request.app.state.chat_settings.dm_policy))


def _answer(allowed: bool, reason: str = "") -> HookAnswer:
    return HookAnswer(result="allow" if allowed else "deny", ok=allowed, error="" if allowed else reason)


@router.post(
    "/auth",
    response_model=HookAnswer,
    responses=_ERRORS,
    openapi_extra=_hook_body(HookAuth),
)
async def mqtt_auth(request: Request, session: SessionDep, limiter: LimiterDep) -> HookAnswer:
    """Is this username with this password (or token) a Switchboard user?"""
    body: HookAuth = await _body(request, HookAuth)
    try:
        await run_in_threadpool(
            check_login, session, limiter, request, body.username, body.password, address=body.peerhost or None
        )
    except HTTPException as exc:
        return _answer(False, str(exc.detail))
    return _answer(True)


@router.post(
    "/acl",
    response_model=HookAnswer,
    responses={**_ERRORS, 422: {"description": "The body is malformed, or has neither acc nor action."}},
    # One of acc (mosquitto-go-auth) or action (EMQX) says what is asked.
    openapi_extra=_hook_body(
        HookAcl,
        anyOf=[
            {"required": ["acc"], "properties": {"acc": {"type": "integer"}}},
            {"required": ["action"], "properties": {"action": {"type": "string"}}},
        ],
    ),
)
async def mqtt_acl(request: Request, session: SessionDep) -> HookAnswer:
    """May this user publish, subscribe to or receive this topic, by the chat scheme's rules?"""
    body: HookAcl = await _body(request, HookAcl)
    actions = _GO_AUTH_ACC.get(body.acc or 0) or _EMQX_ACTIONS.get(body.action or "")
    if not actions:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, detail='give "acc" (1-4) or "action" (publish, subscribe, all)'
        )
    user = session.get(User, body.username) if body.username else None
    if body.username and (user is None or user.disabled):
        return _answer(False, f"unknown user {body.username!r}")
    who = Identity(user.name, Role(user.role)) if user is not None else ANONYMOUS
    policy = hook_policy(request)
    directory = accounts.SessionDirectory(session)
    for action in actions:
        # A shared subscription (bridges sharing the load on EMQX, VerneMQ or Mosquitto) is decided on its filter.
        decision = policy.check(action, who, body.topic, directory, client_id=body.clientid)
        if not decision.allowed:
            return _answer(False, decision.reason)
    return _answer(True)
