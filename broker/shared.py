"""Shared subscriptions: ``$share/{group}/{filter}``, each matching message to one member of each group.

MQTT 5 section 4.8.2 defines them; Mosquitto and EMQX offer them to MQTT 3.1.1 clients too, and so does
this broker. A share group is named by its whole subscription string: ``$share/g/a/+`` and ``$share/g/a/#``
are two groups, as in the spec (ShareName and filter together). Which member gets a message is decided
by the hub (broker/hub.py, ``Hub._choose``); this module keeps who is in which group, finds the groups a
topic reaches, and turns the round robin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.routing import SubscriptionTree
from broker.sessions import Session
from switchboard.topics import split_shared


@dataclass(slots=True)
class ShareGroup:
    """The members of one shared subscription, in the order they joined, and whose turn is next."""

    key: str  # the subscription as the clients wrote it: $share/{group}/{filter}
    group: str
    topic_filter: str
    members: dict[str, int] = field(default_factory=dict)  # client id -> subscription QoS
    turn: int = 0

    def rotation(self) -> list[str]:
        """The members, starting with the one whose turn it is."""
        members = list(self.members)
        start = self.turn % len(members)
        return members[start:] + members[:start]

    def took(self, client_id: str) -> None:
        """``client_id`` got a message: the member after it is next."""
        for index, member in enumerate(self.members):
            if member == client_id:
                self.turn = index + 1
                return


class SharedSubscriptions:
    """Every share group, and a topic tree of their filters (keyed by group, so routing costs the same as for
    ordinary subscriptions)."""

    def __init__(self) -> None:
        self._tree = SubscriptionTree()
        self.groups: dict[str, ShareGroup] = {}
        self.members = 0

    def __bool__(self) -> bool:
        return bool(self.groups)

    def add(self, key: str, client_id: str, qos: int) -> None:
        """Join ``client_id`` to the group of ``key`` (a well-formed ``$share/...`` filter), or change its QoS."""
        share = self.groups.get(key)
        if share is None:
            parts = split_shared(key)
            assert parts is not None, key
            share = self.groups[key] = ShareGroup(key, parts[0], parts[1])
            self._tree.add(parts[1], key, 0)
        if client_id not in share.members:
            self.members += 1
        share.members[client_id] = qos

    def remove(self, key: str, client_id: str) -> bool:
        """``client_id`` leaves the group; the last member's leaving ends the group."""
        share = self.groups.get(key)
        if share is None or share.members.pop(client_id, None) is None:
            return False
        self.members -= 1
        if not share.members:
            del self.groups[key]
            self._tree.remove(share.topic_filter, key)
        return True

    def match(self, topic: str) -> list[ShareGroup]:
        """The groups whose filter matches ``topic`` (each gets the message once)."""
        return [self.groups[key] for key in self._tree.match(topic)]


def rank_member(session: Session, qos: int, avoid: Session | None) -> int | None:
    """How well a member suits a message delivered to it at ``qos``, lower is better; None: it cannot take it.
    0: connected with room in its window; 1: connected and busy; 2: offline and persistent (the message is
    queued for it, QoS 1/2 only); 3: ``avoid``, a member going away, if persistent."""
    persistent = qos > 0 and not session.clean
    if session is avoid:
        return 3 if persistent else None
    if session.connected:
        return 0 if not session.queue and len(session.inflight) < session.limits.max_inflight else 1
    return 2 if persistent else None


def others_connected(share: ShareGroup, sessions: Mapping[str, Session], session: Session) -> bool:
    """Whether a member of ``share`` other than ``session`` is connected."""
    for client_id in share.members:
        other = sessions.get(client_id)
        if other is not None and other is not session and other.connected:
            return True
    return False
