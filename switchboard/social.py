"""Who may see whom: users who share a conversation, and blocks (issue 16 §3).

A user's presence reaches only users who *share a conversation* with it, and never across a block in
either direction:

- two users share a conversation when they have a DM with at least one stored message (the bridge writes
  the two ``dm_members`` rows with the first message) or belong to the same group;
- a block (``blocks``: ``blocker`` blocked ``blocked``) hides each one's presence from the other, whoever
  blocked whom.

A user always sees its own presence. ``GET /v1/presence`` (api/routes/presence.py) and the broker's presence
deliveries ask the same questions: the statements here are SQLAlchemy Core on a ``Connection`` (the
tables of switchboard.schema), so the broker imports them without the ORM (tests/test_import_graph.py).
Each function is one or two indexed queries (``ix_dm_members_user``, ``ix_group_members_user``, the
primary key and ``ix_blocks_blocked`` of ``blocks``).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import CompoundSelect, Connection, and_, or_, select, union

from switchboard.schema import blocks, dm_members, group_members


def contacts_query(user: str, among: Collection[str] | None = None) -> CompoundSelect:
    """The names of the users (``user`` excepted) who share a conversation with ``user``, blocks not
    considered; only those in ``among`` when it is given."""
    mine, theirs = dm_members.alias("mine"), dm_members.alias("theirs")
    by_dm = select(theirs.c.user_name).where(
        mine.c.user_name == user,
        theirs.c.conversation_id == mine.c.conversation_id,
        theirs.c.user_name != user,
    )
    my_groups, members = group_members.alias("my_groups"), group_members.alias("members")
    by_group = select(members.c.user_name).where(
        my_groups.c.user_name == user,
        members.c.group_name == my_groups.c.group_name,
        members.c.user_name != user,
    )
    if among is not None:
        wanted = sorted(set(among))
        by_dm = by_dm.where(theirs.c.user_name.in_(wanted))
        by_group = by_group.where(members.c.user_name.in_(wanted))
    return union(by_dm, by_group)


def blocked_either_way_query(user: str, among: Collection[str] | None = None) -> CompoundSelect:
    """The names of the users ``user`` blocked or who blocked ``user``; only those in ``among`` when given."""
    blocked_by_user = select(blocks.c.blocked).where(blocks.c.blocker == user)
    blocking_user = select(blocks.c.blocker).where(blocks.c.blocked == user)
    if among is not None:
        wanted = sorted(set(among))
        blocked_by_user = blocked_by_user.where(blocks.c.blocked.in_(wanted))
        blocking_user = blocking_user.where(blocks.c.blocker.in_(wanted))
    return union(blocked_by_user, blocking_user)


def visible_presence(connection: Connection, viewer: str, subjects: Collection[str]) -> set[str]:
    """Which of ``subjects`` ``viewer`` may see the presence of (itself included): two queries at most."""
    shown = {viewer} & set(subjects)
    others = set(subjects) - shown
    if not others:
        return shown
    shared = set(connection.execute(contacts_query(viewer, others)).scalars())
    if shared:
        shared -= set(connection.execute(blocked_either_way_query(viewer, shared)).scalars())
    return shown | shared


def may_see_presence(connection: Connection, viewer: str, subject: str) -> bool:
    """True when ``viewer`` may see ``subject``'s presence (one user: what the broker asks per delivery)."""
    return subject in visible_presence(connection, viewer, (subject,))


def presence_audience(connection: Connection, user: str) -> set[str]:
    """Everyone who may see ``user``'s presence, ``user`` excepted (for a broker that fans presence out
    itself). As big as the user's groups: prefer :func:`visible_presence` per viewer where it can."""
    shared = set(connection.execute(contacts_query(user)).scalars())
    if shared:
        shared -= set(connection.execute(blocked_either_way_query(user)).scalars())
    return shared


def has_blocked(connection: Connection, blocker: str, blocked: str) -> bool:
    """True when ``blocker`` blocked ``blocked`` (one direction: a blocked user's DMs to the blocker are
    refused, the blocker's to it are not)."""
    query = select(blocks.c.blocker).where(and_(blocks.c.blocker == blocker, blocks.c.blocked == blocked))
    return connection.execute(query).first() is not None


def blocked_between(connection: Connection, a: str, b: str) -> bool:
    """True when either of ``a`` and ``b`` blocked the other."""
    query = select(blocks.c.blocker).where(
        or_(
            and_(blocks.c.blocker == a, blocks.c.blocked == b),
            and_(blocks.c.blocker == b, blocks.c.blocked == a),
        )
    )
    return connection.execute(query.limit(1)).first() is not None
