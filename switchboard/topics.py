"""Topic scheme v1: what each chat topic means, and the conversation it belongs to.

    dm/{to}/{from}         a direct message from {from} to {to}
    group/{group}/{from}   a message from {from} to the members of {group}
    presence/{user}        retained presence of {user}
    receipt/{to}/{from}    delivery/read receipts from {from} back to {to}
    ack/{user}             the bridge's "stored" acknowledgements for {user}
    typing/{conversation}/{from}  {from} is typing in {conversation} (QoS 0, never stored or queued)

Pure functions only: parsing strings into typed topics. See docs/protocol.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
_NAME = re.compile(NAME_PATTERN)


class Kind(StrEnum):
    """The first level of a chat topic."""

    DM = "dm"
    GROUP = "group"
    PRESENCE = "presence"
    RECEIPT = "receipt"
    ACK = "ack"
    TYPING = "typing"


_KINDS = {kind.value: kind for kind in Kind}

#: How many levels each kind of topic has, its kind included.
_LEVELS = {Kind.DM: 3, Kind.GROUP: 3, Kind.PRESENCE: 2, Kind.RECEIPT: 3, Kind.ACK: 2, Kind.TYPING: 3}


def is_valid_name(name: str) -> bool:
    """True for a legal user or group name: ``[A-Za-z0-9_.-]{1,64}``, the whole string (a trailing newline is
    not part of a name). The one check behind the CLI, the admin API's schemas and the broker."""
    return _NAME.fullmatch(name) is not None


def is_chat_topic(topic: str) -> bool:
    """True when the first level names one of the scheme's kinds (dm, group, presence, ...)."""
    return topic.split("/", 1)[0] in _LEVELS


@dataclass(frozen=True, slots=True)
class ChatTopic:
    """A concrete (wildcard-free) chat topic, split into its parts.

    For ``dm`` and ``receipt`` ``target`` is ``{to}``; for ``group`` it is the group;
    for ``presence`` and ``ack`` it is the user and ``sender`` is empty; for ``typing`` it is the
    conversation id (``dm:a:b`` or ``group:g``).
    """

    kind: Kind
    target: str
    sender: str = ""

    @property
    def conversation(self) -> str | None:
        """The conversation a message on this topic belongs to (dm and group topics only)."""
        if self.kind is Kind.DM:
            return dm_conversation(self.target, self.sender)
        if self.kind is Kind.GROUP:
            return group_conversation(self.target)
        if self.kind is Kind.TYPING:
            return self.target
        return None


def parse_topic(topic: str) -> ChatTopic | None:
    """Parse a concrete chat topic; None when it is not one (wrong shape, bad names, wildcards)."""
    levels = topic.split("/")
    kind = _KINDS.get(levels[0])  # Kind(levels[0]), without the enum's exception for every other first level
    if kind is None:
        return None
    if len(levels) != _LEVELS[kind]:
        return None
    if kind is Kind.TYPING:
        if parse_conversation(levels[1]) is None or not is_valid_name(levels[2]):
            return None
    elif not all(is_valid_name(level) for level in levels[1:]):
        return None
    return ChatTopic(kind, levels[1], levels[2] if len(levels) == 3 else "")


def is_ephemeral(topic: str) -> bool:
    """Typing indicators: delivered at QoS 0 to whoever is connected, never retained, queued or stored."""
    return topic.startswith("typing/")


def may_be_retained(topic: str) -> bool:
    """Whether the broker keeps a retained message on ``topic``: chat topics other than ``presence/`` are
    never retained (a retained message is sent again to every new subscription, the bridge's included,
    so a retained chat message would be stored again and again); their retain flag is ignored."""
    return not is_chat_topic(topic) or topic.startswith("presence/")


def dm_conversation(a: str, b: str) -> str:
    """``dm:{a}:{b}`` with the two names sorted, so both sides name the same conversation."""
    first, second = sorted((a, b))
    return f"dm:{first}:{second}"


def group_conversation(group: str) -> str:
    """``group:{group}``."""
    return f"group:{group}"


@dataclass(frozen=True, slots=True)
class Conversation:
    """A parsed conversation id: a DM between two users, or a group."""

    id: str
    kind: Kind
    members: tuple[str, ...] = ()
    group: str = ""


def parse_conversation(conversation: str) -> Conversation | None:
    """Parse ``dm:{a}:{b}`` (names sorted, distinct or the same) or ``group:{g}``; None otherwise."""
    parts = conversation.split(":")
    if parts[0] == "dm" and len(parts) == 3 and all(is_valid_name(p) for p in parts[1:]):
        if dm_conversation(parts[1], parts[2]) != conversation:
            return None
        return Conversation(conversation, Kind.DM, members=(parts[1], parts[2]))
    if parts[0] == "group" and len(parts) == 2 and is_valid_name(parts[1]):
        return Conversation(conversation, Kind.GROUP, group=parts[1])
    return None


def dm_topic(to: str, sender: str) -> str:
    """The topic ``sender`` publishes a DM to ``to`` on."""
    return f"dm/{to}/{sender}"


def group_topic(group: str, sender: str) -> str:
    """The topic ``sender`` publishes to ``group`` on."""
    return f"group/{group}/{sender}"


def ack_topic(user: str) -> str:
    """Where the bridge tells ``user`` that its messages are stored."""
    return f"ack/{user}"


def typing_topic(conversation: str, sender: str) -> str:
    """Where ``sender`` says it is typing in ``conversation``."""
    return f"typing/{conversation}/{sender}"


def presence_topic(user: str) -> str:
    """The retained presence topic of ``user``."""
    return f"presence/{user}"


#: The prefix of a shared subscription: ``$share/{group}/{filter}`` (MQTT 5 section 4.8.2, offered to MQTT 3.1.1
#: clients by Mosquitto, EMQX and Switchboard's broker).
SHARED_PREFIX = "$share/"


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """The share group and the filter of ``$share/{group}/{filter}``; None for a filter that is not shared.

    Raises ValueError, saying what is wrong, for a malformed share name: an empty group, a group holding
    ``+`` or ``#`` [MQTT-4.8.2-1, MQTT-4.8.2-2], or no filter after the group. The filter itself is
    checked like any other filter by whoever receives it."""
    if not topic_filter.startswith(SHARED_PREFIX):
        return None
    group, slash, shared = topic_filter.removeprefix(SHARED_PREFIX).partition("/")
    if not group or "+" in group or "#" in group or not slash or not shared:
        raise ValueError(
            f"{topic_filter!r} is not a shared subscription: write $share/{{group}}/{{filter}}, with a group name "
            "that is not empty and holds no '+' or '#', followed by a topic filter"
        )
    return group, shared
