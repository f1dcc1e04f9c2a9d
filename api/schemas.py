"""Request and response models of the REST API (what clients see, not the tables).

Every model derives from :class:`Schema`, which puts a whole example object in the OpenAPI schema, made
from its fields' examples (tests/test_api_schema.py checks each example is valid against its schema).
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from switchboard.payloads import MAX_SEQ
from switchboard.topics import NAME_PATTERN

EXAMPLE_TIME = "2026-11-21T09:30:00Z"
#: The largest integer the databases store (a signed 64-bit column): the bound of every integer a client sends
#: (``le=MAX_INT64``), so a larger one answers 422 instead of overflowing in the driver. The same bound as a
#: receipt's ``up_to_seq`` over MQTT.
MAX_INT64 = MAX_SEQ


def example_of(model: type[BaseModel]) -> dict[str, Any]:
    """An example object for ``model``: each field's first example, else its default, else one made up
    from its type (the first literal, a nested model's example, a one-item list)."""
    return {name: _example_value(field.annotation, field) for name, field in model.model_fields.items()}


def _example_value(annotation: Any, field: FieldInfo | None) -> Any:
    if field is not None and field.examples:
        return field.examples[0]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _example_value(args[0], None)
    if origin is Literal:
        return args[0]
    if origin in (Union, types.UnionType):
        return _example_value(next(a for a in args if a is not type(None)), None)
    if origin is list:
        return [_example_value(args[0], None)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return example_of(annotation)
    if field is not None and field.default not in (PydanticUndefined, None):
        return field.default
    made_up: dict[Any, Any] = {datetime: EXAMPLE_TIME, bool: False, int: 1, str: "text"}
    return made_up[annotation]


def _add_example(schema: dict[str, Any], model: type) -> None:
    schema.setdefault("examples", [example_of(model)])


class Schema(BaseModel):
    """Base of every API model: the schema carries a whole example."""

    model_config = ConfigDict(json_schema_extra=_add_example)


class RelationPublic(Schema):
    """The message a relation (reply, reaction, edit, unsend) names."""

    kind: Literal["reply", "reaction", "edit", "unsend"] = Field(examples=["reply"])
    sender: str = Field(description="The target's sender.", examples=["bob"])
    id: str = Field(description="The target's client id.", examples=["m-1"])
    seq: int = Field(description="The target's seq in the same conversation.", examples=[1])


class MessagePublic(Schema):
    """One stored message, with the relations that apply to it (docs/protocol.md, Relations)."""

    conversation: str = Field(examples=["dm:alice:bob"])
    seq: int = Field(description="Place in the conversation: 1, 2, 3 ... without gaps.", examples=[1])
    sender: str = Field(examples=["alice"])
    id: str = Field(description="The sender's id for the message (or a server-made one).", examples=["m-1"])
    body: str | None = Field(
        description="The text: the newest one after an edit; null once the message was unsent.", examples=["hello"]
    )
    stored_at: datetime
    attachments: list[str] = Field(
        default_factory=list,
        description="Media ids of the files the message carries (GET /v1/media/{media_id}); none once unsent.",
        examples=[["q2vKJ7x0R3S1bq0xZr9f2A"]],
    )
    relates_to: RelationPublic | None = Field(
        None, description="For a reply, reaction, edit or unsend: the message it names."
    )
    edited_at: datetime | None = Field(None, description="When its sender last edited it; null if never.")
    unsent: bool = Field(False, description="Unsent by its sender (or an admin): no body, no attachments.")
    reactions: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Each emoji reacted with, and who reacted with it (first first).",
        examples=[{"\U0001f44d": ["bob", "carol"]}],
    )


class MessagesPage(Schema):
    """A page of history and the cursor for the next one."""

    conversation: str = Field(examples=["dm:alice:bob"])
    direction: Literal["backward", "forward"] = Field(
        description="backward: newest first (pass `next` as `before`); forward: oldest first (pass it as `after`)."
    )
    messages: list[MessagePublic]
    next: int | None = Field(description="Cursor for the next page, or null when there is none.", examples=[41])


class Health(Schema):
    """Liveness and database reachability."""

    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]


class MessageDetail(MessagePublic):
    """One message with its delivery and read state."""

    delivered_to: list[str] = Field(description="Users (other than the sender) whose devices have it.")
    read_by: list[str] = Field(description="Users (other than the sender) who have read it.")


class ReadRequest(Schema):
    """Move the caller's read watermark."""

    model_config = ConfigDict(extra="forbid", strict=True)

    up_to_seq: int = Field(ge=0, le=2**62, description="Everything up to this seq has been read.", examples=[42])


class Watermarks(Schema):
    """How far the caller has received and read a conversation."""

    conversation: str = Field(examples=["dm:alice:bob"])
    delivered_seq: int = Field(examples=[42])
    read_seq: int = Field(examples=[40])


class PresencePublic(Schema):
    """A user's presence as last stored by the bridge."""

    user: str = Field(examples=["alice"])
    status: Literal["online", "offline"]
    last_seen: datetime | None = Field(description="When the user was last seen; null if never.")


class PresenceList(Schema):
    presence: list[PresencePublic]


class ConversationPublic(Schema):
    """One of the caller's conversations."""

    id: str = Field(examples=["dm:alice:bob"])
    kind: Literal["dm", "group"]
    last_seq: int = Field(description="Seq of the newest message.", examples=[42])
    updated_at: datetime = Field(description="When its newest message was stored.")
    last_message: MessagePublic | None
    unread: int = Field(description="Messages from others after the caller's read watermark.", examples=[3])


class ConversationsList(Schema):
    conversations: list[ConversationPublic]


class TokenRequest(Schema):
    """Username and password, exchanged for a token."""

    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(min_length=1, max_length=64, examples=["alice"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery staple"])


class TokenResponse(Schema):
    """A bearer token; it also works as the MQTT password (with the same username)."""

    access_token: str = Field(examples=["sbt_3q2-7wEXAMPLEtokenEXAMPLEtokenEXAMPLEtok"])
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth 2 token type, not a secret)
    expires_at: datetime


class ReceiptPublic(Schema):
    """Someone's watermarks in a conversation (the caller's own, from another device, or another member's)."""

    conversation: str = Field(examples=["dm:alice:bob"])
    user: str = Field(examples=["bob"])
    delivered_seq: int = Field(examples=[42])
    read_seq: int = Field(examples=[40])
    updated_at: datetime


class MembershipChange(Schema):
    """A user joined or left one of the caller's groups (or the caller itself was added or removed)."""

    group: str = Field(examples=["family"])
    user: str = Field(examples=["carol"])
    change: Literal["added", "removed"]
    at: datetime


class SyncPage(Schema):
    """What changed for the caller since the cursor, oldest first."""

    messages: list[MessagePublic] = Field(description="New messages in every conversation the caller reads.")
    receipts: list[ReceiptPublic] = Field(description="Watermarks that moved in those conversations.")
    memberships: list[MembershipChange] = Field(description="Membership changes in the caller's groups.")
    next: str = Field(
        description="Pass as `since` next time. Opaque; only ever moves forward.", examples=["v1.1042.77.5"]
    )
    more: bool = Field(description="True when a list was cut at `limit`: call again at once with `next`.")


class UserCreate(Schema):
    """A new account."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=64, pattern=f"^{NAME_PATTERN}$", examples=["carol"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery staple"])
    role: Literal["user", "admin"] = Field("user", description="admin may use the /v1/admin routes.")


class UserPublic(Schema):
    """An account as administrators see it (never its password hash)."""

    name: str = Field(examples=["carol"])
    role: Literal["user", "admin", "service"]
    disabled: bool = Field(examples=[False])
    created_at: datetime


class UsersList(Schema):
    users: list[UserPublic]


class UserUpdate(Schema):
    """Disable an account (it cannot log in, its tokens are revoked, its connections close) or enable it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    disabled: bool = Field(examples=[True])


class PasswordReset(Schema):
    """A new password; the user's tokens are revoked and its MQTT connections closed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    password: str = Field(min_length=1, max_length=1024, examples=["a new long passphrase"])


class GroupCreate(Schema):
    """A new group and its first members."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=64, pattern=f"^{NAME_PATTERN}$", examples=["family"])
    members: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1000, examples=[["alice", "bob"]]
    )


class GroupPublic(Schema):
    """A group and its members."""

    name: str = Field(examples=["family"])
    members: list[str] = Field(examples=[["alice", "bob"]])
    created_at: datetime


class GroupsList(Schema):
    groups: list[GroupPublic]


class MediaPublic(Schema):
    """An uploaded file."""

    media_id: str = Field(description="What a message's attachments name.", examples=["q2vKJ7x0R3S1bq0xZr9f2A"])
    content_type: str = Field(description="As sniffed from the bytes.", examples=["image/jpeg"])
    size: int = Field(description="Bytes.", examples=[48213])
    sha256: str = Field(
        description="SHA-256 of the bytes, hex.",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )


class MediaUsage(Schema):
    """What one user has uploaded."""

    user: str = Field(examples=["alice"])
    files: int = Field(examples=[12])
    bytes: int = Field(description="Sum of the files' sizes.", examples=[3145728])


class MediaUsageList(Schema):
    users: list[MediaUsage]


class MuteState(Schema):
    """Whether the caller gets notifications for a conversation."""

    conversation: str = Field(examples=["group:family"])
    muted: bool = Field(description="Muted: its messages produce no notification for the caller.", examples=[True])
