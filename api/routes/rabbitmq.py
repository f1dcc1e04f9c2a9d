"""RabbitMQ's HTTP auth backend (``rabbitmq_auth_backend_http``): the four routes a RabbitMQ cluster calls so
its MQTT plugin keeps Switchboard's users, tokens and topic rules, deciding exactly what Switchboard's broker
decides.

RabbitMQ sends form-encoded POSTs (``auth_http.http_method = post``: its default, GET, would put passwords in
query strings, which proxies log, so it is not served) and reads a plain-text answer, ``allow`` or ``deny``:

- ``/user``: ``username``, ``password``: may this user log in (the login throttle counts its failures)?
- ``/vhost``: ``username``, ``vhost``, ``ip``: only the MQTT plugin's virtual host (``/``).
- ``/resource``: ``username``, ``vhost``, ``resource`` (``exchange``, ``queue``), ``name``, ``permission``
  (``configure``, ``write``, ``read``): the ``amq.topic`` exchange (read, write) and the MQTT plugin's own
  queues (``mqtt-subscription-...``, ``mqtt-will-...``): what a client may see through them is decided per
  topic by ``/topic``.
- ``/topic``: ``username``, ``vhost``, ``resource`` (``topic``), ``name`` (the exchange), ``permission``
  (``write`` for a PUBLISH, ``read`` for a SUBSCRIBE) and ``routing_key``: the MQTT topic as an AMQP routing key,
  translated back (:func:`mqtt_topic`). Blocks and ``chat.dm_policy`` are decided as on Switchboard's broker
  (api/routes/hooks.py); RabbitMQ's MQTT plugin remembers a connection's allowed topics, so a new block takes
  effect on a connection once it reconnects (or the topic falls out of that memory).

Only RabbitMQ may ask: it sends HTTP Basic of a Switchboard service account, taken from the user info of
the configured URLs (``http://switchboard-bridge:PASSWORD@api:8000/v1/mqtt/rabbitmq/user``), or the
``api.hook_secret`` header where a proxy adds it (see api/routes/hooks.py).
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import Field

from api.deps import LimiterDep, SessionDep, check_login
from api.routes.hooks import hook_policy, require_broker
from api.schemas import Schema
from switchboard import accounts
from switchboard.acl import Action, Identity
from switchboard.tables import Role, User

#: The virtual host of RabbitMQ's MQTT plugin (``mqtt.vhost``) that Switchboard's clients use.
VHOST = "/"
EXCHANGE = "amq.topic"
#: The queues RabbitMQ's MQTT plugin declares for a client's subscriptions and its will.
PLUGIN_QUEUES = ("mqtt-subscription-", "mqtt-will-")
_ALLOW, _DENY = "allow", "deny"

router = APIRouter(prefix="/v1/mqtt/rabbitmq", tags=["broker hooks"], dependencies=[Depends(require_broker)])


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic (or filter) behind an AMQP routing key of RabbitMQ's MQTT plugin.

    The plugin (3.10) writes MQTT's level separator ``/`` as AMQP's ``.`` and ``+`` as ``*`` (``#`` is the
    same). A ``.`` inside a level becomes a separator too (``dm/bob/e.ve`` arrives as ``dm.bob.e.ve``), so a
    name with a ``.`` cannot be told apart: such users are refused at login (:func:`rabbitmq_user`), and such
    groups' topics have one level too many and are refused by the chat scheme."""
    return "/".join("+" if level == "*" else level for level in routing_key.split("."))


class UserQuestion(Schema):
    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    password: str = Field(default="", max_length=1024, examples=["alice's password or token"])


class VhostQuestion(Schema):
    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    vhost: str = Field(max_length=256, examples=["/"])
    ip: str = Field(default="", max_length=64, examples=["203.0.113.7"])


class ResourceQuestion(Schema):
    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    vhost: str = Field(max_length=256, examples=["/"])
    resource: str = Field(max_length=16, examples=["queue"])
    name: str = Field(max_length=512, examples=["mqtt-subscription-phone-1qos1"])
    permission: str = Field(max_length=16, examples=["configure"])


class TopicQuestion(ResourceQuestion):
    routing_key: str = Field(max_length=65535, examples=["dm.bob.alice"])


def _answer(allowed: bool) -> PlainTextResponse:
    return PlainTextResponse(_ALLOW if allowed else _DENY)


Q = TypeVar("Q", bound=Schema)


async def _question(request: Request, model: type[Q]) -> Q | None:
    """The form's fields; None when they are not what RabbitMQ sends (answered ``deny``)."""
    try:
        return model.model_validate(dict(await request.form()))
    except ValueError:
        return None


def _documented(model: type[Schema], what: str) -> dict[str, Any]:
    """The route's form body and answers in the OpenAPI document (the handlers read the form themselves)."""
    return {
        "responses": {
            200: {
                "description": what,
                "content": {"text/plain": {"schema": {"type": "string", "enum": ["allow", "deny"]}}},
            },
            401: {"description": "The caller is not the broker (no service account, no hook secret)."},
            429: {"description": "Too many failed logins of the caller's service account from its address."},
        },
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": model.model_json_schema()}},
            }
        },
    }


def _active(session: SessionDep, name: str) -> User | None:
    user = session.get(User, name)
    return None if user is None or user.disabled else user


@router.post(
    "/user",
    response_class=PlainTextResponse,
    **_documented(UserQuestion, "``allow`` when the password (or token) is good."),
)
async def rabbitmq_user(request: Request, session: SessionDep, limiter: LimiterDep) -> PlainTextResponse:
    """May this user log in with this password (or token)? ``allow`` or ``deny``."""
    question = await _question(request, UserQuestion)
    if question is None or "." in question.username:  # see mqtt_topic: its topics would be ambiguous
        return _answer(False)
    try:
        await run_in_threadpool(check_login, session, limiter, request, question.username, question.password)
    except HTTPException:  # 401 and 429 alike: RabbitMQ only understands deny
        return _answer(False)
    return _answer(True)


@router.post(
    "/vhost",
    response_class=PlainTextResponse,
    **_documented(VhostQuestion, "``allow`` for the MQTT plugin's virtual host."),
)
async def rabbitmq_vhost(request: Request, session: SessionDep) -> PlainTextResponse:
    """May this user use this virtual host? Only the MQTT plugin's."""
    question = await _question(request, VhostQuestion)
    return _answer(question is not None and question.vhost == VHOST and _active(session, question.username) is not None)


@router.post(
    "/resource",
    response_class=PlainTextResponse,
    **_documented(ResourceQuestion, "``allow`` for amq.topic and the plugin's own queues."),
)
async def rabbitmq_resource(request: Request, session: SessionDep) -> PlainTextResponse:
    """May this user use this exchange or queue? The MQTT plugin's own, nothing else."""
    question = await _question(request, ResourceQuestion)
    if question is None or question.vhost != VHOST or _active(session, question.username) is None:
        return _answer(False)
    if question.resource == "exchange":
        return _answer(question.name == EXCHANGE and question.permission in ("read", "write"))
    return _answer(question.resource == "queue" and question.name.startswith(PLUGIN_QUEUES))


@router.post(
    "/topic",
    response_class=PlainTextResponse,
    **_documented(TopicQuestion, "``allow`` when the chat scheme allows it."),
)
async def rabbitmq_topic(request: Request, session: SessionDep) -> PlainTextResponse:
    """May this user publish to (``write``) or subscribe to (``read``) this routing key, by the chat scheme?"""
    question = await _question(request, TopicQuestion)
    if question is None or question.vhost != VHOST or question.name != EXCHANGE:
        return _answer(False)
    action = {"write": Action.PUBLISH, "read": Action.SUBSCRIBE}.get(question.permission)
    user = _active(session, question.username)
    if action is None or user is None:
        return _answer(False)
    who = Identity(user.name, Role(user.role))
    topic = mqtt_topic(question.routing_key)
    decision = hook_policy(request).check(action, who, topic, accounts.SessionDirectory(session))
    return _answer(decision.allowed)


__all__ = ["mqtt_topic", "router"]
