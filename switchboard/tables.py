"""The database tables, as SQLModel classes. Alembic migrations in ``switchboard/migrations`` create them.

Names are the identifiers of users and groups (they never change), so they are primary keys.
A conversation row carries ``last_seq``, the counter that gives each stored message its place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    and_,
    column,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel

# Shared with the Core tables of switchboard.schema (re-exported: most modules import them from here).
from switchboard.schema import DirectoryChange as DirectoryChange
from switchboard.schema import Role as Role
from switchboard.schema import UtcDateTime as UtcDateTime
from switchboard.schema import utcnow as utcnow

#: BIGINT ids on Postgres; SQLite only auto-increments a column declared INTEGER PRIMARY KEY.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


def _timestamp(*, nullable: bool = False) -> Column[datetime]:
    return Column(UtcDateTime(), nullable=nullable)


def _where(condition: ColumnElement[bool]) -> dict[str, Any]:
    """A partial index's condition, on both databases."""
    return {"postgresql_where": condition, "sqlite_where": condition}


class User(SQLModel, table=True):
    """An account that can log in over MQTT and HTTP."""

    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=64)
    password_hash: str = Field(max_length=256)
    role: str = Field(default=Role.USER, max_length=16)
    disabled: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class Group(SQLModel, table=True):
    """A named set of users sharing the ``group:{name}`` conversation."""

    __tablename__ = "groups"

    name: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class GroupMember(SQLModel, table=True):
    """Membership of one user in one group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user", "user_name"),)

    group_name: str = Field(foreign_key="groups.name", primary_key=True, max_length=64, ondelete="CASCADE")
    user_name: str = Field(foreign_key="users.name", primary_key=True, max_length=64, ondelete="CASCADE")


class Conversation(SQLModel, table=True):
    """A DM between two users (``dm:a:b``) or a group's conversation (``group:g``).

    ``updated_at`` is the time of its last message (for "newest activity first").
    """

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_updated_at", "updated_at"),)

    id: str = Field(primary_key=True, max_length=140)
    kind: str = Field(max_length=16)
    last_seq: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class DmMember(SQLModel, table=True):
    """The two users of a DM conversation, so a user's DMs are found by an index, not by parsing ids.
    (Group conversations' members are the group's members.)"""

    __tablename__ = "dm_members"
    __table_args__ = (Index("ix_dm_members_user", "user_name"),)

    conversation_id: str = Field(foreign_key="conversations.id", primary_key=True, max_length=140, ondelete="CASCADE")
    user_name: str = Field(primary_key=True, max_length=64)


class Message(SQLModel, table=True):
    """A stored message: its place (``seq``) in its conversation, sender, client id and body.

    On Postgres the table is partitioned by month of ``stored_at`` (switchboard/partitions.py; its
    primary key there is ``(id, stored_at)``), so its uniqueness rules live in :class:`MessageKey`."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_seq", "conversation_id", "seq"),
        Index("ix_messages_conversation_stream", "conversation_id", "stream_pos"),
        Index(
            "ix_messages_conversation_relates",
            "conversation_id",
            "relates_to_seq",
            **_where(column("relates_to_seq").is_not(None)),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID_TYPE)
    conversation_id: str = Field(foreign_key="conversations.id", max_length=140)
    seq: int = Field(sa_type=BigInteger)
    sender: str = Field(max_length=64)
    client_msg_id: str = Field(max_length=64)
    body: str = Field(sa_type=Text)
    topic: str = Field(max_length=256)
    payload: bytes = Field(sa_type=LargeBinary)
    stored_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    #: Position in the "messages" stream (switchboard.streams): commit order across all conversations.
    stream_pos: int = Field(default=0, sa_type=BigInteger)
    #: The media ids the message carries, space-separated (empty for none); see :class:`Media`.
    attachments: str = Field(default="", sa_type=Text, sa_column_kwargs={"server_default": ""})
    #: A relation ("reply", "reaction", "edit", "unsend") names its target by the target's seq.
    relates_kind: str | None = Field(default=None, max_length=8)
    relates_to_seq: int | None = Field(default=None, sa_type=BigInteger)
    #: Set on a target when its sender edited it (``body`` is then the newest text) or unsent it.
    edited_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    unsent_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))


class MessageKey(SQLModel, table=True):
    """One row per stored message, in an unpartitioned table: ``(sender, client_msg_id)`` is stored once
    (idempotent retries) and ``(conversation_id, seq)`` is taken once, whatever partition holds the message."""

    __tablename__ = "message_keys"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_message_keys_conversation_seq"),)

    sender: str = Field(primary_key=True, max_length=64)
    client_msg_id: str = Field(primary_key=True, max_length=64)
    conversation_id: str = Field(max_length=140)
    seq: int = Field(sa_type=BigInteger)
    stored_at: datetime = Field(sa_column=_timestamp())


class Media(SQLModel, table=True):
    """An uploaded file. The bytes are kept once per content (``sha256``) by switchboard.blobs; the same
    bytes uploaded again by the same user give back the same media id."""

    __tablename__ = "media"
    __table_args__ = (UniqueConstraint("uploader", "sha256", name="uq_media_uploader_sha256"),)

    id: str = Field(primary_key=True, max_length=64)
    uploader: str = Field(max_length=64)
    sha256: str = Field(max_length=64)
    content_type: str = Field(max_length=64)
    size: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class MediaGrant(SQLModel, table=True):
    """A conversation a media file was sent in: its members may read the file."""

    __tablename__ = "media_grants"
    __table_args__ = (Index("ix_media_grants_conversation", "conversation_id"),)

    media_id: str = Field(foreign_key="media.id", primary_key=True, max_length=64, ondelete="CASCADE")
    conversation_id: str = Field(primary_key=True, max_length=140)


class RejectedMessage(SQLModel, table=True):
    """A PUBLISH the bridge could not store as a message, kept with the reason."""

    __tablename__ = "rejected_messages"

    id: int | None = Field(default=None, primary_key=True, sa_type=ID_TYPE)
    topic: str = Field(sa_type=Text)
    payload: bytes = Field(sa_type=LargeBinary)
    reason: str = Field(sa_type=Text)
    received_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class Presence(SQLModel, table=True):
    """A user's last known presence, from ``presence/{user}`` (kept by the bridge)."""

    __tablename__ = "presence"

    user_name: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    last_seen: datetime = Field(sa_column=_timestamp())


class MutedConversation(SQLModel, table=True):
    """A conversation a user has muted: its messages produce no notification for that user."""

    __tablename__ = "muted_conversations"

    user_name: str = Field(primary_key=True, max_length=64)
    conversation_id: str = Field(primary_key=True, max_length=140)
    muted_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


_IN_FLIGHT = and_(column("batch_id").is_not(None), column("sent_at").is_(None))


class Notification(SQLModel, table=True):
    """The outbox of notifications for offline users: one row per (recipient, message), written in the
    transaction that stores the message, sent by switchboard.notify in batches per user (``batch_id``)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_name", "conversation_id", "seq", name="uq_notifications_message"),
        # Partial indexes: rows waiting for a batch, and rows of batches not yet sent. Sent rows leave both,
        # so the notifier's queries cost what is waiting, not what was ever sent (bridge/batching.py).
        Index("ix_notifications_unbatched", "user_name", "created_at", "id", **_where(column("batch_id").is_(None))),
        Index("ix_notifications_in_flight", "batch_id", **_where(_IN_FLIGHT)),
        Index("ix_notifications_due", "next_attempt_at", "batch_id", **_where(_IN_FLIGHT)),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID_TYPE)
    user_name: str = Field(max_length=64)
    conversation_id: str = Field(max_length=140)
    seq: int = Field(sa_type=BigInteger)
    sender: str = Field(max_length=64)
    preview: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    #: Set when a notifier takes the row into a batch; the batch keeps its id (the webhook's idempotency
    #: key) and its rows through every retry.
    batch_id: str | None = Field(default=None, max_length=32)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class Receipt(SQLModel, table=True):
    """How far a user has received and read a conversation; both watermarks only move forward."""

    __tablename__ = "receipts"
    __table_args__ = (Index("ix_receipts_conversation_stream", "conversation_id", "stream_pos"),)

    user_name: str = Field(primary_key=True, max_length=64)
    conversation_id: str = Field(primary_key=True, max_length=140)
    delivered_seq: int = Field(default=0, sa_type=BigInteger)
    read_seq: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = Field(sa_column=_timestamp())
    #: Position in the "receipts" stream of its last change.
    stream_pos: int = Field(default=0, sa_type=BigInteger)


class ApiToken(SQLModel, table=True):
    """A bearer token (only its SHA-256 is stored); it also works as the MQTT password of its user."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user", "user_name"),)

    token_hash: str = Field(primary_key=True, max_length=64)
    user_name: str = Field(foreign_key="users.name", max_length=64, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())
    expires_at: datetime = Field(sa_column=_timestamp())


class StreamPosition(SQLModel, table=True):
    """The head of one change stream ("messages", "receipts", "directory"); see switchboard.streams."""

    __tablename__ = "stream_positions"

    name: str = Field(primary_key=True, max_length=32)
    position: int = Field(default=0, sa_type=BigInteger)


class DirectoryEvent(SQLModel, table=True):
    """One change to users or group memberships, at its position in the "directory" stream."""

    __tablename__ = "directory_events"
    __table_args__ = (Index("ix_directory_events_user", "user_name", "position"),)

    position: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    change: str = Field(max_length=32)
    user_name: str = Field(max_length=64)
    group_name: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class Block(SQLModel, table=True):
    """``blocker`` blocked ``blocked``: its DMs to the blocker are refused, and presence and typing are not
    shown either way. Group messages still flow (both chose the group)."""

    __tablename__ = "blocks"
    __table_args__ = (Index("ix_blocks_blocked", "blocked", "blocker"),)

    blocker: str = Field(primary_key=True, max_length=64)
    blocked: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_timestamp())


class LoginFailure(SQLModel, table=True):
    """Failed logins for one user name from one client address, within the current window (see
    switchboard.logins). The name is the one tried, whether or not such a user exists."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_last_at", "last_at"),)

    user_name: str = Field(primary_key=True, max_length=64)
    address: str = Field(primary_key=True, max_length=64)
    failures: int = Field(default=0)
    #: When the window of these failures opened (its first failure); it closes ``window_seconds`` later.
    first_at: datetime = Field(sa_column=_timestamp())
    last_at: datetime = Field(sa_column=_timestamp())
