"""Fan-out: one message to every session whose subscriptions match it, each delivery past the ACL's receive check.

The hub (``broker.hub``) hands every message here: the subscription tree (``broker.routing``) gives the matching
sessions with their subscription QoS, each gets the message once at min(publish QoS, subscription QoS)
[MQTT-3.3.5-1] with retain=0 [MQTT-3.3.1-9], and one member of each matching share group gets it through
``broker.share_delivery``. The receive check is asked only where the ACL says a topic needs one (group
membership, operator rules, a filter starting with a wildcard); routing runs without awaiting while the ACL's
cache answers every check, and returns the coroutine that finishes the rest at the first one it cannot.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from broker.routing import SubscriptionTree
from broker.sessions import Outgoing, Session, V5Properties
from broker.share_delivery import ShareDelivery
from broker.shared import SharedSubscriptions, ShareGroup

if TYPE_CHECKING:
    from broker.access import AccessControl
    from broker.hub import Stats


class Fanout:
    """Routes messages to the hub's sessions; owns the delivery to share groups (``share_delivery``)."""

    def __init__(
        self,
        *,
        sessions: dict[str, Session],
        tree: SubscriptionTree,
        shared: SharedSubscriptions,
        access: AccessControl,
        stats: Stats,
    ) -> None:
        self.sessions = sessions
        self.tree = tree
        self.shared = shared
        self.access = access
        self.stats = stats
        self.share_delivery = ShareDelivery(shared, sessions, access, self.deliver, stats)

    async def route(self, topic: str, payload: bytes, qos: int, properties: V5Properties | None = None) -> int:
        """Offer the message to every matching session the ACL lets read it, and to one member of each matching
        share group; return how many sessions it was offered to."""
        routed = self.route_now(topic, payload, qos, properties)
        return routed if isinstance(routed, int) else await routed

    def route_now(
        self, topic: str, payload: bytes, qos: int, properties: V5Properties | None = None
    ) -> int | Coroutine[Any, Any, int]:
        """Route as far as the ACL's cache allows; at the first receive check it cannot answer, the rest."""
        offered = 0
        if self.shared.groups:
            shares = self.shared.match(topic)
            for index, share in enumerate(shares):
                message = Outgoing(topic, payload, qos, False, 0, share.key, properties)
                given = self.share_delivery.deliver_now(share, message)
                if not isinstance(given, bool):
                    rest = shares[index + 1 :]
                    return self._route_after_shares(topic, payload, qos, given, rest, offered, properties)
                offered += given
        matches = self.tree.match(topic)
        if not matches:
            return offered
        # Whether a delivery needs the receive check depends on the topic, and on one fact per session (the
        # second answer only asked for when a recipient has a filter starting with a wildcard).
        access, sessions, messages_out = self.access, self.sessions, self.stats.messages_out
        check_plain = access.receive_needs_check(topic, root_wildcard=False)
        check_wildcard: bool | None = None
        pending = iter(matches.items())
        for client_id, sub_qos in pending:
            session = sessions.get(client_id)
            if session is None:
                continue
            if session.root_wildcards > 0:
                if check_wildcard is None:
                    check_wildcard = access.receive_needs_check(topic, root_wildcard=True)
                check = check_wildcard
            else:
                check = check_plain
            if check:
                allowed = access.may_receive_now(session.principal, topic)
                if allowed is None:
                    return self._route_rest(topic, payload, qos, (client_id, sub_qos), pending, offered, properties)
                if not allowed:
                    continue
            granted = qos if qos < sub_qos else sub_qos
            if session.outbox is not None or (granted and not session.clean):  # self.deliver, inlined
                messages_out[granted] += 1
            session.offer(Outgoing(topic, payload, granted, False, 0, None, properties))
            offered += 1
        return offered

    async def _route_rest(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        first: tuple[str, int],
        rest: Iterator[tuple[str, int]],
        offered: int,
        properties: V5Properties | None = None,
    ) -> int:
        check_plain = self.access.receive_needs_check(topic, root_wildcard=False)
        check_wildcard = self.access.receive_needs_check(topic, root_wildcard=True)
        for client_id, sub_qos in (first, *rest):
            session = self.sessions.get(client_id)
            if session is None:
                continue
            check = check_wildcard if session.root_wildcards > 0 else check_plain
            if check and not await self.access.may_receive(session.principal, topic):
                continue
            self.deliver(session, Outgoing(topic, payload, min(qos, sub_qos), False, 0, None, properties))
            offered += 1
        return offered

    def deliver(self, session: Session, message: Outgoing) -> None:
        """Offer one message to one session (counted as sent when it goes out or waits in a persistent session)."""
        if session.outbox is not None or (message.qos > 0 and not session.clean):  # session.connected
            self.stats.messages_out[message.qos] += 1
        session.offer(message)

    async def _route_after_shares(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        given: Coroutine[Any, Any, bool],
        shares: list[ShareGroup],
        offered: int,
        properties: V5Properties | None = None,
    ) -> int:
        """The rest of ``route_now`` once a share group's choice had to ask the database."""
        offered += await given
        for share in shares:
            message = Outgoing(topic, payload, qos, False, 0, share.key, properties)
            offered += await self.share_delivery.deliver(share, message)
        pending = iter(self.tree.match(topic).items())
        first = next(pending, None)
        if first is None:
            return offered
        return await self._route_rest(topic, payload, qos, first, pending, offered, properties)
