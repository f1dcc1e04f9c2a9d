"""Broker hooks: ``POST /v1/mqtt/auth`` and ``POST /v1/mqtt/acl``, so an external broker (Mosquitto with
mosquitto-go-auth's HTTP backend, EMQX's HTTP authentication and authorization) keeps Switchboard's users,
tokens and topic rules.

Both accept JSON or form bodies and always answer 200 with ``{"result": "allow"|"deny", "ok": bool}``:
EMQX reads ``result``; mosquitto-go-auth reads ``ok`` with ``auth_opt_http_response_mode json``. Failed
logins count against the same per-user and per-address limits as the API's own.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, ValidationError

from api.deps import LimiterDep, SessionDep, check_login
from api.schemas import Schema
from switchboard import accounts, jsontext
from switchboard.acl import ANONYMOUS, Action, Identity, Policy
from switchboard.tables import Role, User

router = APIRouter(prefix="/v1/mqtt", tags=["broker hooks"])

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


class HookAcl(Schema):
    """What an external broker asks: may this client publish or subscribe to this topic?"""

    username: str = Field(default="", max_length=64, examples=["alice"])
    clientid: str = Field(default="", max_length=256, examples=["phone-1"])
    topic: str = Field(min_length=1, max_length=65535, examples=["dm/bob/alice"])
    acc: int | None = Field(
        default=None, description="mosquitto-go-auth: 1 read, 2 write, 3 both, 4 subscribe", examples=[2]
    )
    action: str | None = Field(default=None, description="EMQX: publish, subscribe or all", examples=["publish"])


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


def _shared_filter(topic: str) -> str | None:
    """The filter a subscription asks for: ``$share/{group}/{filter}`` (several bridges sharing the load
    on EMQX, VerneMQ or Mosquitto) is decided as ``{filter}``; None for a malformed shared subscription."""
    if not topic.startswith("$share/"):
        return topic
    group, _, shared = topic.removeprefix("$share/").partition("/")
    return shared if group and "+" not in group and "#" not in group and shared else None


def _answer(allowed: bool, reason: str = "") -> HookAnswer:
    return HookAnswer(result="allow" if allowed else "deny", ok=allowed, error="" if allowed else reason)


@router.post("/auth", response_model=HookAnswer, responses={422: {"description": "The body is malformed."}})
async def mqtt_auth(request: Request, session: SessionDep, limiter: LimiterDep) -> HookAnswer:
    """Is this username with this password (or token) a Switchboard user?"""
    body: HookAuth = await _body(request, HookAuth)
    try:
        check_login(session, limiter, request, body.username, body.password)
    except HTTPException as exc:
        return _answer(False, str(exc.detail))
    return _answer(True)


@router.post("/acl", response_model=HookAnswer, responses={422: {"description": "The body is malformed."}})
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
    policy = Policy()  # the chat scheme; generic topics are the external broker's own business
    directory = accounts.SessionDirectory(session)
    for action in actions:
        topic = _shared_filter(body.topic) if action is Action.SUBSCRIBE else body.topic
        if topic is None:
            return _answer(False, "a shared subscription is $share/{group}/{filter}")
        decision = policy.check(action, who, topic, directory, client_id=body.clientid)
        if not decision.allowed:
            return _answer(False, decision.reason)
    return _answer(True)
