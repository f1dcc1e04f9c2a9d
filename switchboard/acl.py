"""Who may publish, subscribe to or receive which topic: topic scheme v1 as pure decisions.

The functions take the caller's identity, the topic and a :class:`Directory` that answers a few
questions about the world (does this user exist, is this user in that group, who blocked whom, do two
users share a conversation). They return a :class:`Decision` with a reason a person can read. The broker
calls them; they do no I/O of their own.

Issue 16's abuse controls are decided here too: a DM from a user its recipient blocked, or (with
``chat.dm_policy: shared_group``) to a user it shares no group or DM with, is refused with the same words
(the sender is not told it was blocked); ``presence/{user}`` reaches only users who share a conversation
with it and neither blocked the other; typing is not shown to a user who blocked its author.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from switchboard.rules import OperatorRule, decide
from switchboard.schema import Role
from switchboard.topics import (
    Kind,
    is_chat_topic,
    is_valid_name,
    parse_conversation,
    parse_topic,
    presence_topic,
    split_shared,
)


class Action(StrEnum):
    """What a client wants to do with a topic."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connected client is: a user name and role, or anonymous (``name`` None)."""

    name: str | None
    role: Role | None = None

    @property
    def is_service(self) -> bool:
        return self.role is Role.SERVICE

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


ANONYMOUS = Identity(None)


class DmPolicy(StrEnum):
    """Who may start a DM (``chat.dm_policy``)."""

    ANYONE = "anyone"
    #: Only users who share a group, or already have a DM conversation with messages.
    SHARED_GROUP = "shared_group"


def dm_refused(recipient: str) -> str:
    """Why a DM was refused, for a block and for ``chat.dm_policy`` alike: the sender is not told which."""
    return f"{recipient} is not accepting direct messages from you"


class Directory(Protocol):
    """The facts the rules need about users, groups, blocks and conversations."""

    def user_exists(self, name: str) -> bool: ...

    def is_member(self, group: str, user: str) -> bool: ...

    def is_blocked(self, blocker: str, blocked: str) -> bool: ...

    def shares_conversation(self, user: str, other: str) -> bool:
        """Whether the two share a group, or a DM conversation with messages."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer, and why."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


#: The topics a service account (the bridge) publishes events made through REST on (docs/protocol.md): a read
#: receipt (``POST .../read``), an unsend (``DELETE /v1/messages/...``, on the unsent message's own topic).
_SERVICE_EVENTS = (Kind.RECEIPT, Kind.DM, Kind.GROUP)


def _allow(reason: str) -> Decision:
    """Every reason to allow is a fixed text: one Decision each, made once (the broker decides per message)."""
    found = _ALLOWED.get(reason)
    if found is None:
        found = _ALLOWED[reason] = Decision(True, reason)
    return found


_ALLOWED: dict[str, Decision] = {}


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


@dataclass(frozen=True, slots=True)
class Policy:
    """The chat scheme, plus what applies outside it.

    ``generic_topics``: with no operator rules, anyone may use non-chat topics (mqtt.allow_anonymous).
    ``rules``: the operator's rules (mqtt.acl_rules); when given, they alone decide non-chat topics.
    ``dm_policy``: who may start a DM (chat.dm_policy).
    """

    generic_topics: bool = False
    rules: tuple[OperatorRule, ...] | None = None
    dm_policy: DmPolicy = DmPolicy.ANYONE

    def check(
        self, action: Action, who: Identity, topic: str, directory: Directory, *, client_id: str = ""
    ) -> Decision:
        """Decide ``action`` on ``topic`` (a topic name, or a filter for SUBSCRIBE).

        A shared subscription ``$share/{group}/{filter}`` is decided on ``{filter}``: joining a share group
        gives a member part of what ``{filter}`` matches, never more."""
        if action is Action.SUBSCRIBE:
            try:
                shared = split_shared(topic)
            except ValueError as exc:
                return _deny(str(exc))
            if shared is not None:
                topic = shared[1]
        first = topic.split("/", 1)[0]
        if first.startswith("$"):
            if action is not Action.PUBLISH and who.is_admin:
                return _allow("administrators read the broker's $ topics")
            return _deny("$ topics (broker statistics) are for administrators to read only")
        if who.is_service and action is not Action.PUBLISH:
            return _allow("service account")
        if first in ("+", "#") or not is_chat_topic(topic):
            # A filter starting with a wildcard also reaches chat topics: those deliveries are then
            # checked one by one (RECEIVE), so only what the client may read gets through.
            return self._generic(action, who, topic, client_id)
        if who.name is None:
            return _deny("chat topics need a login: connect with a username and password")
        if who.is_service:
            if first in _SERVICE_EVENTS and parse_topic(topic) is not None:
                return _allow("service account: an event made through REST (docs/protocol.md)")
            if first != Kind.ACK:
                return _deny(
                    "the bridge's service account publishes only on ack/{user}, receipt/{to}/{from} and the"
                    " dm/ and group/ topics of an unsend made through REST"
                )
            return _allow("service account")
        if action is Action.PUBLISH:
            decision = _check_publish(who.name, topic, directory)
            if decision.allowed and topic.startswith("dm/"):
                return self._check_dm(who.name, topic.split("/", 2)[1], directory)
            return decision
        if action is Action.RECEIVE:
            return _check_receive(who.name, topic, directory)
        if first in (Kind.TYPING, Kind.PRESENCE):
            directory.is_blocked(who.name, who.name)  # read now what each delivery will ask (cached for it)
        return _check_subscribe(who.name, topic, directory)

    def _check_dm(self, me: str, recipient: str, directory: Directory) -> Decision:
        """A DM the topic rules allow: refused when the recipient blocked the sender, or by ``dm_policy``."""
        if recipient == me:
            return _allow("own message to an existing user")
        if directory.is_blocked(recipient, me):
            return _deny(dm_refused(recipient))
        if self.dm_policy is DmPolicy.SHARED_GROUP and not directory.shares_conversation(me, recipient):
            return _deny(dm_refused(recipient))
        return _allow("own message to an existing user")

    def _generic(self, action: Action, who: Identity, topic: str, client_id: str) -> Decision:
        if self.rules is None:
            if self.generic_topics:
                return _allow("generic MQTT topics are open (mqtt.allow_anonymous is on)")
            return _deny("only chat topics (dm/, group/, presence/, receipt/, ack/) are served")
        allowed, reason = decide(
            self.rules,
            subscribing=action is not Action.PUBLISH,
            username=who.name,
            client_id=client_id,
            topic=topic,
        )
        return Decision(allowed, reason)

    @property
    def has_rules(self) -> bool:
        return self.rules is not None

    def check_will(self, who: Identity, topic: str, directory: Directory, *, client_id: str = "") -> Decision:
        """A last will on a chat topic may only be the client's own presence; elsewhere publish rules apply."""
        if not is_chat_topic(topic):
            return self.check(Action.PUBLISH, who, topic, directory, client_id=client_id)
        if who.name is not None and not who.is_service and topic == presence_topic(who.name):
            return _allow("own presence")
        own = f"presence/{who.name}" if who.name else "none for anonymous clients"
        return _deny(f"a will on a chat topic may only be your own presence topic ({own})")


def _check_publish(me: str, topic: str, directory: Directory) -> Decision:
    parsed = parse_topic(topic)
    if parsed is None:
        return _deny(f"{topic!r} is not a valid chat topic (see docs/protocol.md)")
    if parsed.kind is Kind.DM or parsed.kind is Kind.RECEIPT:
        if parsed.sender != me:
            return _deny(f"you may only publish as yourself: the last level must be {me!r}")
        if not directory.user_exists(parsed.target):
            return _deny(f"user {parsed.target!r} does not exist")
        return _allow("own message to an existing user")
    if parsed.kind is Kind.GROUP:
        if parsed.sender != me:
            return _deny(f"you may only publish as yourself: the last level must be {me!r}")
        if not directory.is_member(parsed.target, me):
            return _deny(f"you are not a member of group {parsed.target!r}")
        return _allow("member of the group")
    if parsed.kind is Kind.PRESENCE:
        if parsed.target != me:
            return _deny(f"you may only publish your own presence: presence/{me}")
        return _allow("own presence")
    if parsed.kind is Kind.TYPING:
        if parsed.sender != me:
            return _deny(f"you may only publish as yourself: the last level must be {me!r}")
        return _in_conversation(me, parsed.target, directory)
    return _deny("ack/ topics are published by the bridge only")


def _in_conversation(me: str, conversation: str, directory: Directory) -> Decision:
    """Whether ``me`` is part of ``conversation`` (a DM with an existing user, or a group it belongs to)."""
    parsed = parse_conversation(conversation)
    if parsed is None:
        return _deny(f"{conversation!r} is not a conversation id (dm:a:b or group:g)")
    if parsed.kind is Kind.GROUP:
        if not directory.is_member(parsed.group, me):
            return _deny(f"you are not a member of group {parsed.group!r}")
        return _allow("member of the group")
    if me not in parsed.members:
        return _deny(f"you are not part of {conversation}")
    other = parsed.members[1] if parsed.members[0] == me else parsed.members[0]
    if not directory.user_exists(other):
        return _deny(f"user {other!r} does not exist")
    return _allow("own conversation")


def _check_receive(me: str, topic: str, directory: Directory) -> Decision:
    """A delivered chat message must be one the client could subscribe to by its exact topic (group membership
    is looked up again, so removal takes effect at once); presence only from users it shares a conversation
    with, neither having blocked the other; typing not from a user it blocked."""
    kind = topic.split("/", 1)[0]
    if kind == Kind.PRESENCE:
        decision = _check_subscribe(me, topic, directory)
        if not decision.allowed:
            return decision
        user = topic[9:]
        if user == me:
            return _allow("own presence")
        if directory.is_blocked(me, user) or directory.is_blocked(user, me):
            return _deny(f"presence of {user!r} is not shown: a block between you")
        if not directory.shares_conversation(me, user):
            return _deny(f"presence of {user!r} is shown only to users who share a group or a DM with it")
        return _allow("presence of a contact")
    if kind == Kind.TYPING:
        decision = _check_subscribe(me, topic, directory)
        if decision.allowed and directory.is_blocked(me, topic.rsplit("/", 1)[1]):
            return _deny("typing of a user you blocked is not shown")
        return decision
    return _check_subscribe(me, topic, directory)


def _check_subscribe(me: str, topic_filter: str, directory: Directory) -> Decision:
    levels = topic_filter.split("/")
    kind = levels[0]
    if "#" in levels:
        return _deny(f"'#' is not allowed in {kind}/ filters: subscribe to your own topics")
    if kind == Kind.TYPING:
        if len(levels) != 3 or levels[1] == "+" or not (levels[2] == "+" or is_valid_name(levels[2])):
            return _deny("typing/ filters name one conversation: typing/{conversation}/+")
        return _in_conversation(me, levels[1], directory)
    if not all(level == "+" or is_valid_name(level) for level in levels[1:]):
        return _deny(f"{topic_filter!r} is not a valid chat topic filter")
    if kind == Kind.PRESENCE:
        return _allow("presence: each delivery is checked") if len(levels) == 2 else _deny("use presence/+")
    if kind == Kind.ACK:
        return _allow("own acks") if levels[1:] == [me] else _deny(f"you may only read ack/{me}")

    if len(levels) != 3:
        return _deny(f"{kind}/ filters have three levels: {kind}/{{to}}/{{from}}")
    target, sender = levels[1], levels[2]
    if kind == Kind.GROUP:
        if target == "+" or not directory.is_member(target, me):
            return _deny(f"you are not a member of group {target!r}")
        return _allow("member of the group")
    # dm and receipt: the caller must be one end, named outright.
    if target == me or sender == me:
        return _allow("own conversation")
    return _deny(f"you may only read {kind}/{me}/+ or {kind}/+/{me}")
