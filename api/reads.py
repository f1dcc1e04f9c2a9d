"""The fast read path of the two requests a reconnecting phone makes most: a page of history and a sync page.

Each runs in one thread hop on one pooled connection, with Core statements returning plain rows (no ORM
objects, no session), and renders the JSON once with orjson: no response model validates what the
server built (the OpenAPI schema still names the models, api/schemas.py, and tests check the answers
against them). A history page is one query when the caller may read the conversation (the access check
rides along as a column, and so does whether each message has reactions); only an empty or refused page
asks again, to tell 404 from 403 from empty. A sync page reads the streams' heads, then what changed past the
cursor; on Postgres only the rows the page shows, found conversation by conversation by their indexes
(:func:`_after_by_conversation`), however many messages the caller's conversations hold.

Messages are rendered from switchboard.message_views' ``MessageView`` dataclasses as they are (orjson writes a
dataclass's fields in order): its fields and ``RelationView``'s are ``MessagePublic``'s and
``RelationPublic``'s, in the same order (tests/test_api_reads.py checks it), so no dictionary is built per
message.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from fastapi import HTTPException, status
from sqlalchemy import Connection, Engine, Select, bindparam, exists, func, select, true

from switchboard import accounts, message_views, streams
from switchboard.schema import group_members, stream_positions, users
from switchboard.tables import DirectoryChange, DirectoryEvent, Group, Message, Receipt
from switchboard.topics import Conversation, Kind, parse_conversation

messages = Message.__table__  # type: ignore[attr-defined]
receipts = Receipt.__table__  # type: ignore[attr-defined]
groups = Group.__table__  # type: ignore[attr-defined]
directory_events = DirectoryEvent.__table__  # type: ignore[attr-defined]

#: A message row: what message_views reads (its ``reacted`` included), then the position in the stream.
MESSAGE_COLUMNS = (*message_views.COLUMNS, messages.c.stream_pos)
CURSOR_VERSION = "v1"
MEMBERSHIP_CHANGES: dict[str, str] = {DirectoryChange.MEMBER_ADDED: "added", DirectoryChange.MEMBER_REMOVED: "removed"}
JSON_OPTIONS = orjson.OPT_UTC_Z  # "...Z" for UTC, as pydantic writes it


def dumps(content: dict[str, Any]) -> bytes:
    return orjson.dumps(content, option=JSON_OPTIONS)


# History


def history_page(
    engine: Engine, caller: str, conversation: str, before: int | None, after: int | None, limit: int
) -> bytes:
    """The JSON of ``GET /v1/conversations/{conversation}/messages``; HTTPException 404 or 403."""
    parsed = parse_conversation(conversation)
    if parsed is None:
        raise _missing(conversation)
    forward = after is not None
    values: dict[str, Any] = {"conversation": parsed.id, "limit": limit + 1, "before": before, "after": after}
    access: Kind | None = parsed.kind
    if parsed.kind is Kind.DM:
        if caller not in parsed.members:
            access = None  # not one of the DM's two users: no query can make that true
        values.update(member_a=parsed.members[0], member_b=parsed.members[1], members=len(set(parsed.members)))
    else:
        values.update(group=parsed.group, caller=caller)
    with engine.connect() as connection:
        rows: list[Any] = []
        if access is not None:
            rows = list(connection.execute(history_statement(before is not None, forward, access), values).all())
        if not rows or not rows[0].may_read:
            _check_access(connection, parsed, caller, conversation)
            if access is None or rows:  # the check passed where the first query said no: read again
                rows = list(connection.execute(history_statement(before is not None, forward, None), values).all())
        more = len(rows) > limit
        rows = rows[:limit]
        shown = message_views.views_of_rows(connection, rows)
    return dumps(
        {
            "conversation": parsed.id,
            "direction": "forward" if forward else "backward",
            "messages": shown,
            "next": rows[-1].seq if more and rows else None,
        }
    )


@functools.cache
def history_statement(before: bool, forward: bool, access: Kind | None) -> Select[Any]:
    """A history page's query, built once per shape (its values are bound parameters, so it is neither built
    nor compiled again per request); with ``access``, a ``may_read`` column: the caller may read the
    conversation and it exists."""
    query = select(*MESSAGE_COLUMNS).where(messages.c.conversation_id == bindparam("conversation"))
    if before:
        query = query.where(messages.c.seq < bindparam("before"))
    if forward:
        query = query.where(messages.c.seq > bindparam("after"))
    query = query.order_by(messages.c.seq.asc() if forward else messages.c.seq.desc()).limit(bindparam("limit"))
    if access is Kind.DM:
        names = users.c.name.in_([bindparam("member_a"), bindparam("member_b")])
        found = select(func.count()).where(names).scalar_subquery()
        query = query.add_columns((found == bindparam("members")).label("may_read"))
    elif access is Kind.GROUP:
        member = (group_members.c.group_name == bindparam("group")) & (group_members.c.user_name == bindparam("caller"))
        query = query.add_columns(exists().where(member).label("may_read"))
    return query


def _check_access(connection: Connection, conversation: Conversation, caller: str, text: str) -> None:
    """404 when the conversation does not exist, 403 when the caller is not part of it (as
    api.deps.readable_conversation says)."""
    if conversation.kind is Kind.DM:
        names = set(conversation.members)
        found = connection.execute(select(func.count()).where(users.c.name.in_(names))).scalar_one()
        if found != len(names):
            raise _missing(text)
        if caller not in names:
            raise _forbidden(text)
        return
    if connection.execute(select(groups.c.name).where(groups.c.name == conversation.group)).first() is None:
        raise _missing(text)
    member = (group_members.c.group_name == conversation.group) & (group_members.c.user_name == caller)
    if connection.execute(select(group_members.c.user_name).where(member)).first() is None:
        raise _forbidden(text)


def _missing(conversation: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"conversation {conversation!r} does not exist")


def _forbidden(conversation: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=f"you are not part of {conversation!r}")


# Sync


@dataclass(frozen=True)
class Cursor:
    """Positions in the messages, receipts and directory streams."""

    messages: int
    receipts: int
    directory: int

    def __str__(self) -> str:
        return f"{CURSOR_VERSION}.{self.messages}.{self.receipts}.{self.directory}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        parts = text.split(".")
        if (
            len(parts) != 4
            or parts[0] != CURSOR_VERSION
            or not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts[1:])
        ):
            return None
        return cls(*(int(p) for p in parts[1:]))

    def behind(self, heads: dict[str, int]) -> bool:
        """True when some stream's head is past this cursor."""
        return (
            heads[streams.MESSAGES] > self.messages
            or heads[streams.RECEIPTS] > self.receipts
            or heads[streams.DIRECTORY] > self.directory
        )


@dataclass
class SyncResult:
    """A sync page, whether it is empty, and (when asked) what the caller reads, for a long poll's waiter."""

    content: dict[str, Any]
    next: Cursor
    empty: bool
    conversations: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)


def sync_page(engine: Engine, user: str, since: str | None, limit: int, *, interest: bool = False) -> SyncResult:
    """``GET /v1/sync``'s answer (HTTPException 400 for a bad cursor); with ``interest``, also the ids of the
    conversations ``user`` reads and its groups."""
    with engine.connect() as connection:
        heads = {stream: 0 for stream in streams.ALL}
        heads.update((name, position) for name, position in connection.execute(HEADS))
        now = Cursor(heads[streams.MESSAGES], heads[streams.RECEIPTS], heads[streams.DIRECTORY])
        if since is None:
            content = {"messages": [], "receipts": [], "memberships": [], "next": str(now), "more": False}
            return SyncResult(content, now, True)
        cursor = _checked(since, now)
        # A stream whose head is the cursor has nothing to give (what commits after the heads were read is
        # left for the next sync, as it would be by the head the cursor advances to): no query for it.
        found_messages = (
            _conversation_rows_after(
                connection, MESSAGES_AFTER, MESSAGES_AFTER_BY_CONVERSATION, user, cursor.messages, limit + 1
            )
            if now.messages > cursor.messages
            else []
        )
        found_receipts = (
            _conversation_rows_after(
                connection, RECEIPTS_AFTER, RECEIPTS_AFTER_BY_CONVERSATION, user, cursor.receipts, limit + 1
            )
            if now.receipts > cursor.receipts
            else []
        )
        found_events = (
            _membership_events(connection, user, cursor.directory, limit + 1)
            if now.directory > cursor.directory
            else []
        )
        conversations: frozenset[str] = frozenset()
        my_groups: frozenset[str] = frozenset()
        if interest:
            conversations = frozenset(connection.execute(READABLE, {"user": user}).scalars())
            my_groups = frozenset(connection.execute(MY_GROUPS, {"user": user}).scalars())
        shown = message_views.views_of_rows(connection, found_messages[:limit])
    following = Cursor(
        _advanced(cursor.messages, now.messages, [r.stream_pos for r in found_messages], limit),
        _advanced(cursor.receipts, now.receipts, [r.stream_pos for r in found_receipts], limit),
        _advanced(cursor.directory, now.directory, [r.position for r in found_events], limit),
    )
    more = max(len(found_messages), len(found_receipts), len(found_events)) > limit
    content = {
        "messages": shown,
        "receipts": [
            {
                "conversation": row.conversation_id,
                "user": row.user_name,
                "delivered_seq": row.delivered_seq,
                "read_seq": row.read_seq,
                "updated_at": row.updated_at,
            }
            for row in found_receipts[:limit]
        ],
        "memberships": [
            {"group": row.group_name, "user": row.user_name, "change": MEMBERSHIP_CHANGES[row.change], "at": row.at}
            for row in found_events[:limit]
        ],
        "next": str(following),
        "more": more,
    }
    empty = not (found_messages or found_receipts or found_events)
    return SyncResult(content, following, empty, conversations, my_groups)


def _checked(since: str, now: Cursor) -> Cursor:
    cursor = Cursor.parse(since)
    if cursor is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"since={since!r} is not a sync cursor: pass the `next` of an earlier /v1/sync, or omit since",
        )
    if cursor.messages > now.messages or cursor.receipts > now.receipts or cursor.directory > now.directory:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"since={since!r} is ahead of this server (was the database restored?): sync again without since",
        )
    return cursor


def _advanced(position: int, head: int, found: list[int], limit: int) -> int:
    """Where the next sync starts: after the last change returned when there were more than ``limit``; else
    at the head read before the queries (everything up to it had committed, so they saw it) or past it."""
    if len(found) > limit:
        return found[limit - 1]
    return max([position, head, *found])


# The sync page's statements, built once: the caller, positions and limits are bound parameters.
HEADS = select(stream_positions.c.name, stream_positions.c.position)
#: The ids of the conversations ``:user`` reads (a subquery: the parameter is a placeholder, not a name).
READABLE = accounts.readable_conversation_ids(cast(str, bindparam("user")))
MY_GROUPS = select(group_members.c.group_name).where(group_members.c.user_name == bindparam("user"))


def _after(table: Any, columns: Sequence[Any]) -> Select[Any]:
    """``columns`` of ``table``'s rows in the conversations ``:user`` reads, past ``:after`` in the stream, the
    first ``:limit`` in stream order: the statement SQLite runs."""
    return (
        select(*columns)
        .where(table.c.conversation_id.in_(READABLE), table.c.stream_pos > bindparam("after"))
        .order_by(table.c.stream_pos)
        .limit(bindparam("limit"))
    )


def _after_by_conversation(table: Any, columns: Sequence[Any]) -> Select[Any]:
    """The same rows, bounded first: the ``:limit``-th position past ``:after`` among the conversations
    ``:user`` reads is found conversation by conversation (an index-only scan of each one's
    ``(conversation_id, stream_pos)`` index, ``:limit`` positions at most), then each conversation's rows up to
    it are read, and only they. The statement Postgres runs. :func:`_after` sorts every row past the cursor in
    all the caller's conversations, for every page (a member of a group of 300,000 messages syncing from the
    start sorted them all, page after page; bench/api_big_group.py); reading whole rows conversation by
    conversation before choosing reads up to ten times the rows a page shows. Each step is a LATERAL with
    ``ORDER BY stream_pos LIMIT``, so even a generic plan (psycopg prepares a statement run five times) walks
    the index in order rather than guessing how many rows a position range holds."""
    readable = READABLE.subquery("readable")

    def each_conversation(selected: Sequence[Any], name: str, *bounds: Any) -> Any:
        return (
            select(*selected)
            .where(table.c.conversation_id == readable.c.conversation_id, table.c.stream_pos > bindparam("after"))
            .where(*bounds)
            .order_by(table.c.stream_pos)
            .limit(bindparam("limit"))
            .lateral(name)
        )

    first = each_conversation([table.c.stream_pos], "first")
    chosen = (
        select(first.c.stream_pos)
        .select_from(readable.join(first, true()))
        .order_by(first.c.stream_pos)
        .limit(bindparam("limit"))
        .subquery("chosen")
    )
    bound = select(func.max(chosen.c.stream_pos)).scalar_subquery()
    page = each_conversation(columns, "page", table.c.stream_pos <= bound)
    return (
        select(*page.c).select_from(readable.join(page, true())).order_by(page.c.stream_pos).limit(bindparam("limit"))
    )


MESSAGES_AFTER = _after(messages, MESSAGE_COLUMNS)
MESSAGES_AFTER_BY_CONVERSATION = _after_by_conversation(messages, MESSAGE_COLUMNS)
RECEIPT_COLUMNS = (
    receipts.c.conversation_id,
    receipts.c.user_name,
    receipts.c.delivered_seq,
    receipts.c.read_seq,
    receipts.c.updated_at,
    receipts.c.stream_pos,
)
RECEIPTS_AFTER = _after(receipts, RECEIPT_COLUMNS)
RECEIPTS_AFTER_BY_CONVERSATION = _after_by_conversation(receipts, RECEIPT_COLUMNS)
MEMBERSHIP_EVENTS = (
    select(
        directory_events.c.position,
        directory_events.c.change,
        directory_events.c.user_name,
        directory_events.c.group_name,
        directory_events.c.at,
    )
    .where(
        directory_events.c.position > bindparam("after"),
        directory_events.c.change.in_(list(MEMBERSHIP_CHANGES)),
        (directory_events.c.user_name == bindparam("user")) | directory_events.c.group_name.in_(MY_GROUPS),
    )
    .order_by(directory_events.c.position)
    .limit(bindparam("limit"))
)


def _conversation_rows_after(
    connection: Connection, plain: Select[Any], by_conversation: Select[Any], user: str, after: int, limit: int
) -> list[Any]:
    """A stream's rows in ``user``'s conversations past ``after``: ``by_conversation`` on Postgres, ``plain``
    elsewhere (see :func:`_after_by_conversation`)."""
    statement = by_conversation if connection.dialect.name == "postgresql" else plain
    return list(connection.execute(statement, {"user": user, "after": after, "limit": limit}).all())


def _membership_events(connection: Connection, user: str, after: int, limit: int) -> list[Any]:
    return list(connection.execute(MEMBERSHIP_EVENTS, {"user": user, "after": after, "limit": limit}).all())
