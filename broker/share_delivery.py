"""Which member of a share group gets a message, and what happens to a member's messages when it goes away.

The hub (broker/hub.py) finds the groups a topic reaches (broker/shared.py) and hands each message here:
the best ranked member (``rank_member``) in round-robin order that the ACL lets read it gets it. A member
that goes away leaves its queued messages and its QoS 1 messages in flight to another connected member (a
persistent member keeps them while no other is connected); QoS 2 messages in flight stay with it
[MQTT-4.8.2-4, MQTT-4.8.2-5].
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from broker.sessions import Outgoing, Session
from broker.shared import SharedSubscriptions, ShareGroup, others_connected, rank_member

if TYPE_CHECKING:
    from broker.access import AccessControl
    from broker.hub import Stats

log = logging.getLogger(__name__)


class ShareDelivery:
    """Delivers shared-subscription messages for the hub."""

    def __init__(
        self,
        shared: SharedSubscriptions,
        sessions: dict[str, Session],
        access: AccessControl,
        deliver_to: Callable[[Session, Outgoing], None],
        stats: Stats,
    ) -> None:
        self.shared = shared
        self.sessions = sessions
        self.access = access
        self._deliver_to = deliver_to
        self.stats = stats

    async def deliver(self, share: ShareGroup, message: Outgoing, *, avoid: Session | None = None) -> bool:
        """Give ``message`` to one member of ``share``; False when none can take it."""
        given = self.deliver_now(share, message, avoid)
        return given if isinstance(given, bool) else await given

    def deliver_now(
        self, share: ShareGroup, message: Outgoing, avoid: Session | None = None
    ) -> bool | Coroutine[Any, Any, bool]:
        """The best ranked member (see ``rank_member``), in round-robin order, that the ACL lets read the message
        gets it; a coroutine to await when the ACL's cache cannot answer. ``avoid``: a member going away, chosen
        only when no other can take the message."""
        ranked = self._ranked(share, message.qos, avoid)
        for index, session in enumerate(ranked):
            if self.access.receive_needs_check(message.topic, root_wildcard=session.root_wildcards > 0):
                allowed = self.access.may_receive_now(session.principal, message.topic)
                if allowed is None:
                    return self._deliver_rest(share, message, ranked[index:])
                if not allowed:
                    continue
            self._give(share, session, message)
            return True
        return False

    async def _deliver_rest(self, share: ShareGroup, message: Outgoing, ranked: list[Session]) -> bool:
        for session in ranked:
            check = self.access.receive_needs_check(message.topic, root_wildcard=session.root_wildcards > 0)
            if not check or await self.access.may_receive(session.principal, message.topic):
                self._give(share, session, message)
                return True
        return False

    def _ranked(self, share: ShareGroup, qos: int, avoid: Session | None) -> list[Session]:
        ranked: list[tuple[int, Session]] = []
        for client_id in share.rotation():
            session = self.sessions.get(client_id)
            if session is not None:
                rank = rank_member(session, min(qos, share.members[client_id]), avoid)
                if rank is not None:
                    ranked.append((rank, session))
        ranked.sort(key=lambda pair: pair[0])  # stable: the round robin decides among equals
        return [session for _, session in ranked]

    def _give(self, share: ShareGroup, session: Session, message: Outgoing) -> None:
        share.took(session.client_id)
        # (the member may have left the group during the ACL check's await: then its QoS is unknown)
        message.qos = min(message.qos, share.members.get(session.client_id, message.qos))
        self._deliver_to(session, message)

    async def hand_over(self, session: Session) -> None:
        """A member went away: its shared messages go to other members (a persistent member keeps them while no
        other member is connected)."""

        def movable(message: Outgoing) -> bool:
            share = self.shared.groups.get(message.share or "")
            return share is not None and (session.clean or others_connected(share, self.sessions, session))

        moved = session.take_shared(movable)
        if moved:
            await self.redeliver(session, moved)

    async def redeliver(self, gone: Session, messages: list[Outgoing]) -> None:
        handed = 0
        for message in messages:
            share = self.shared.groups.get(message.share or "")
            if share is not None and await self.deliver(share, message, avoid=gone):
                handed += 1
        self.stats.shared_handed_over += handed
        log.info(
            "client_id=%s left %d message(s) of shared subscriptions: %d handed to other members, %d lost",
            gone.client_id,
            len(messages),
            handed,
            len(messages) - handed,
        )
