"""Message payloads: what a client may publish on a dm/group topic, and what the bridge answers.

A payload is either a JSON object ``{"id": "...", "body": "...", ...}`` or, for clients such as
``mosquitto_pub -m hello``, plain UTF-8 text, which becomes a text message with a server-made id.
A payload that starts with ``{`` is taken as JSON and must be a valid message object. Anything
else is a :class:`Rejection` with a reason a person can act on; nothing is dropped silently.

A message may relate to an earlier one (issue 16 §2): ``"relates_to": {"kind": "reply"|"reaction"|
"edit"|"unsend", "sender": S, "id": I}`` names its target by the target's sender and client id, which
every live recipient knows. :func:`parse_message` checks the shape; :func:`relation_refusal` checks the
rules that need no database, given the publisher's name (:func:`parse_chat` does both). The rules that
need the database (the target exists in this conversation, is not itself an edit, the edit window) are
the bridge's. A refused message is answered on ``ack/{sender}`` with :func:`refusal_payload`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from switchboard import jsontext
from switchboard.emoji import is_one_emoji
from switchboard.topics import is_valid_name

MAX_ID_CHARS = 64
MAX_BODY_CHARS = 16_384
MAX_ATTACHMENTS = 10
#: The largest seq a database column holds (signed 64 bits).
MAX_SEQ = 2**63 - 1
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The kinds of ``relates_to``.
RELATION_KINDS = ("reply", "reaction", "edit", "unsend")
_RELATION_SHAPE = '"relates_to" must be {"kind": "reply"|"reaction"|"edit"|"unsend", "sender": S, "id": I}'


@dataclass(frozen=True, slots=True)
class Relation:
    """What a message relates to: ``kind`` (one of :data:`RELATION_KINDS`) and its target, named by the
    target's sender and client id."""

    kind: str
    sender: str
    id: str


@dataclass(frozen=True, slots=True)
class ChatPayload:
    """A valid message: the client's id (or a server-made one), its text body, the media ids of the
    files it carries (uploaded with ``POST /v1/media``, or received in a conversation the sender belongs
    to), and what it relates to, if anything."""

    id: str
    body: str
    server_made_id: bool = False
    attachments: tuple[str, ...] = ()
    relates_to: Relation | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload cannot be stored as a message."""

    reason: str


def parse_message(payload: bytes) -> ChatPayload | Rejection:
    """Turn the bytes of a dm/group PUBLISH into a message, or say why not."""
    if not payload:
        return Rejection('empty payload: send a JSON object {"id", "body"} or plain UTF-8 text')
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(f"payload is not UTF-8 (bad byte at offset {exc.start}): send UTF-8 text or JSON")
    if not text.lstrip().startswith("{"):
        return _checked(ChatPayload(id=uuid.uuid4().hex, body=text, server_made_id=True))
    try:
        data = jsontext.loads(text)
    except json.JSONDecodeError as exc:
        return Rejection(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except jsontext.JsonTooDeep as exc:
        return Rejection(str(exc))
    if not isinstance(data, dict):
        return Rejection('JSON payload must be an object with "id" and "body"')
    return _from_object(data)


def _from_object(data: dict[str, Any]) -> ChatPayload | Rejection:
    message_id = data.get("id")
    body = data.get("body")
    if not isinstance(message_id, str) or not message_id:
        return Rejection('missing "id": give each message a unique string id of at most 64 characters')
    if len(message_id) > MAX_ID_CHARS:
        return Rejection(f'"id" is {len(message_id)} characters long; the limit is {MAX_ID_CHARS}')
    relation = _relation(data.get("relates_to"))
    if isinstance(relation, Rejection):
        return relation
    if body is None and relation is not None and relation.kind == "unsend":
        body = ""  # an unsend carries no text: "body" may be left out
    if not isinstance(body, str):
        return Rejection('missing "body": the message text must be a JSON string')
    attachments = _attachments(data.get("attachments", []))
    if isinstance(attachments, Rejection):
        return attachments
    return _checked(ChatPayload(id=message_id, body=body, attachments=attachments, relates_to=relation))


def _relation(value: Any) -> Relation | Rejection | None:
    """``{"kind", "sender", "id"}``, or None when absent (or JSON null)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return Rejection(_RELATION_SHAPE)
    kind, sender, target = value.get("kind"), value.get("sender"), value.get("id")
    if kind not in RELATION_KINDS:
        return Rejection(f'"relates_to" kind {kind!r} is unknown: use "reply", "reaction", "edit" or "unsend"')
    if not isinstance(sender, str) or not is_valid_name(sender):
        return Rejection('"relates_to" needs "sender": the user name of the target message\'s sender')
    if not isinstance(target, str) or not target or len(target) > MAX_ID_CHARS:
        return Rejection(f'"relates_to" needs "id": the target message\'s client id (1 to {MAX_ID_CHARS} characters)')
    return Relation(str(kind), sender, target)


def _attachments(value: Any) -> tuple[str, ...] | Rejection:
    """``[{"media_id": "..."}, ...]``: at most MAX_ATTACHMENTS distinct media ids."""
    shape = Rejection('"attachments" must be a list of {"media_id": "..."} objects from POST /v1/media')
    if not isinstance(value, list):
        return shape
    if len(value) > MAX_ATTACHMENTS:
        return Rejection(f"{len(value)} attachments; a message may carry at most {MAX_ATTACHMENTS}")
    ids: list[str] = []
    for item in value:
        media_id = item.get("media_id") if isinstance(item, dict) else None
        if not isinstance(media_id, str) or _MEDIA_ID.fullmatch(media_id) is None:
            return shape
        if media_id in ids:
            return Rejection(f"attachment {media_id!r} is listed twice")
        ids.append(media_id)
    return tuple(ids)


def _checked(message: ChatPayload) -> ChatPayload | Rejection:
    if len(message.body) > MAX_BODY_CHARS:
        return Rejection(f"body is {len(message.body)} characters long; the limit is {MAX_BODY_CHARS}")
    return message


def relation_refusal(message: ChatPayload, publisher: str) -> Rejection | None:
    """The relation rules that need no database, for a message published by ``publisher``; None when it
    may pass (a message without ``relates_to`` always may).

    - ``reply``: any body, any attachments; any member may reply to any message.
    - ``reaction``: the body is exactly one emoji (:func:`switchboard.emoji.is_one_emoji`), no attachments.
    - ``edit``: only of the publisher's own message; the body is the new text (it may be empty, as for a
      photo whose caption is removed); no attachments (an edit replaces the text only).
    - ``unsend``: only of the publisher's own message (an admin unsends through REST); the body is empty
      (or left out) and there are no attachments, so what recipients receive live is what is stored.
    - no message relates to itself (same sender and id).
    """
    relation = message.relates_to
    if relation is None:
        return None
    if relation.sender == publisher and relation.id == message.id:
        return Rejection("a message cannot relate to itself: give the relation its own id")
    if relation.kind == "reply":
        return None
    if message.attachments:
        return Rejection(f"a {relation.kind} cannot carry attachments")
    if relation.kind == "reaction":
        if not is_one_emoji(message.body):
            return Rejection("a reaction's body must be exactly one emoji, such as \U0001f44d")
        return None
    if relation.sender != publisher:
        return Rejection(f"only the sender of a message may {relation.kind} it")
    if relation.kind == "unsend" and message.body:
        return Rejection('an unsend carries no text: leave "body" empty or out')
    return None


def parse_chat(payload: bytes, publisher: str) -> ChatPayload | Rejection:
    """:func:`parse_message`, then :func:`relation_refusal`: every check of a chat publish that needs no
    database, as the broker's door and the bridge both make them."""
    message = parse_message(payload)
    if isinstance(message, Rejection):
        return message
    return relation_refusal(message, publisher) or message


def refusal_payload(message_id: str | None, conversation: str, error: str) -> bytes:
    """The notice on ``ack/{sender}`` for a refused message: ``{"id": <client id or null>,
    "conversation": ..., "error": "<reason a person can read>"}``, compact, ASCII-escaped JSON."""
    return json.dumps({"id": message_id, "conversation": conversation, "error": error}, separators=(",", ":")).encode()


def claimed_id(payload: bytes) -> str | None:
    """The client id a refused payload claims, for its notice: the ``"id"`` of a JSON object when it is
    a string of 1 to MAX_ID_CHARS characters; None otherwise (plain text, broken JSON, no id)."""
    try:
        data = jsontext.loads(payload.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON, nested too deeply
        return None
    message_id = data.get("id") if isinstance(data, dict) else None
    return message_id if isinstance(message_id, str) and 0 < len(message_id) <= MAX_ID_CHARS else None


def ack_payload(message_id: str, conversation: str, seq: int, stored_at: datetime) -> bytes:
    """What the bridge publishes on ``ack/{sender}`` once a message is committed: compact JSON
    ``{"id":...,"conversation":...,"seq":...,"stored_at":...}``, ASCII-escaped as ``json.dumps`` does.

    Formatted directly (one per stored message: a third of the cost of a JSON encoder's walk over a dict);
    a batch's messages share one ``stored_at``, whose text is made once."""
    return (
        f'{{"id":{_quote(message_id)},"conversation":{_quote(conversation)},"seq":{int(seq)},'
        f'"stored_at":"{_isoformat(stored_at)}"}}'
    ).encode()


_quote = json.encoder.encode_basestring_ascii
_isoformat = lru_cache(maxsize=16)(datetime.isoformat)


@dataclass(frozen=True, slots=True)
class PresencePayload:
    """``presence/{user}``: online or offline, and when."""

    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ReceiptPayload:
    """``receipt/{to}/{from}``: {from} has received (or read) {conversation} up to ``up_to_seq``."""

    conversation: str
    up_to_seq: int
    status: str


def _json_object(payload: bytes) -> dict[str, Any] | Rejection:
    try:
        data = jsontext.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejection(f"payload is not UTF-8 (bad byte at offset {exc.start})")
    except json.JSONDecodeError as exc:
        return Rejection(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
    except jsontext.JsonTooDeep as exc:
        return Rejection(str(exc))
    if not isinstance(data, dict):
        return Rejection("payload must be a JSON object")
    return data


def parse_presence(payload: bytes, now: datetime) -> PresencePayload | Rejection | None:
    """``{"status": "online"|"offline", "at": ISO-8601}``; ``at`` defaults to ``now`` and is never later than
    ``now``: a client's clock (or a chosen far-future time) must not freeze its presence through the
    watermark. Empty: nothing to store."""
    if not payload:
        return None
    data = _json_object(payload)
    if isinstance(data, Rejection):
        return data
    status = _presence_status(data)
    if isinstance(status, Rejection):
        return status
    at = data.get("at")
    if at is None:
        return PresencePayload(status, now)
    try:
        moment = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        moment = None
    if moment is None:
        return Rejection('presence "at" must be an ISO-8601 time such as 2026-11-21T19:50:11+00:00')
    moment = moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)
    return PresencePayload(status, min(moment, now))


def _presence_status(data: dict[str, Any]) -> str | Rejection:
    status = data.get("status")
    if status not in ("online", "offline"):
        return Rejection('presence "status" must be "online" or "offline"')
    return str(status)


def presence_payload(status: str, at: datetime) -> bytes:
    """What the broker publishes on ``presence/{user}``: ``{"status": ..., "at": ...}``."""
    return json.dumps({"status": status, "at": at.isoformat()}).encode()


def stamp_presence(payload: bytes, now: datetime) -> bytes | Rejection:
    """A client's own presence as the broker passes it on: its status, at the server's time ``now`` (the
    client's ``"at"`` is ignored). An empty payload stays empty: it clears the retained presence."""
    if not payload:
        return payload
    data = _json_object(payload)
    if isinstance(data, Rejection):
        return data
    status = _presence_status(data)
    if isinstance(status, Rejection):
        return status
    return presence_payload(status, now)


def parse_receipt(payload: bytes) -> ReceiptPayload | Rejection:
    """``{"conversation": "dm:a:b", "up_to_seq": 7, "status": "delivered"|"read"}``."""
    data = _json_object(payload)
    if isinstance(data, Rejection):
        return data
    conversation, up_to, status = data.get("conversation"), data.get("up_to_seq"), data.get("status")
    if not isinstance(conversation, str):
        return Rejection('receipt needs "conversation", e.g. "dm:alice:bob"')
    if not isinstance(up_to, int) or isinstance(up_to, bool) or not 0 <= up_to <= MAX_SEQ:
        return Rejection(f'receipt "up_to_seq" must be a whole number from 0 to {MAX_SEQ}')
    if status not in ("delivered", "read"):
        return Rejection('receipt "status" must be "delivered" or "read"')
    return ReceiptPayload(conversation, up_to, status)
