"""The broker's shared state: sessions, subscriptions, retained messages, presence; routing goes through broker.fanout.

Connections (``broker.connection``, the ``broker.handle_*`` modules) call the hub; the hub never does I/O
except through a session's outbox. Delivery rules (MQTT 3.1.1 §3.3, §4.3):

- a message goes to each matching session once, at min(publish QoS, highest matching subscription
  QoS) [MQTT-3.3.5-1]; overlapping subscriptions do not duplicate it;
- forwarded messages carry retain=0 [MQTT-3.3.1-9]; retained messages sent because of a new
  subscription carry retain=1 [MQTT-3.3.1-8];
- every delivery passes the ACL's receive check where the rules need one (group membership,
  operator rules), so a removed member stops receiving and retained messages never leak; the broker's
  own presence messages go through the same check (an anonymous ``#`` subscriber sees no presence);
- chat topics other than ``presence/`` are never retained (``switchboard.topics.may_be_retained``);
- a shared subscription ``$share/{group}/{filter}`` (broker/shared.py) takes each matching message once per
  group, to one member: a connected member with room in its window first, in turn; a connected busy one
  next; with no member connected, a QoS 1/2 message is queued for a persistent member (clean_session=0),
  as Mosquitto does, and a QoS 0 one is dropped. When a member goes away, its queued messages and its
  QoS 1 messages in flight go to another connected member (a persistent member keeps them while no
  other is connected); QoS 2 messages in flight stay with it [MQTT-4.8.2-4, MQTT-4.8.2-5]. A new shared
  subscription gets no retained messages (MQTT 5 §3.3.1.3 sends them on non-shared subscriptions only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker import v5, will_delay
from broker.fanout import Fanout
from broker.persistence import StateStore, refill_session
from broker.presence_delay import PresenceDelay
from broker.retained import RetainedStore
from broker.routing import SubscriptionTree
from broker.sessions import Limits, Outgoing, Session, V5Properties, Will
from broker.shared import SharedSubscriptions
from switchboard.payloads import Rejection, parse_presence, presence_payload
from switchboard.topics import may_be_retained, presence_topic, split_shared

if TYPE_CHECKING:
    from broker.access import AccessControl

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters for $SYS and metrics."""

    connections: int = 0
    messages_in: list[int] = field(default_factory=lambda: [0, 0, 0])
    messages_out: list[int] = field(default_factory=lambda: [0, 0, 0])
    auth_failures: int = 0
    dropped_qos0: int = 0
    refused_connections: int = 0
    shared_handed_over: int = 0  # shared-subscription messages given to another member when theirs went away
    #: Chat messages refused at the door (broker.door), by reason.
    refused: dict[str, int] = field(default_factory=lambda: {"not_authorized": 0, "rate": 0, "payload": 0})


class Hub:
    """Everything shared between connections."""

    def __init__(
        self,
        *,
        limits: Limits,
        access: AccessControl,
        presence_for: Callable[[str], bool],
        store: StateStore | None = None,
        principal_for: Callable[[str | None], Any] = lambda _user: None,
        service_limits: Limits | None = None,
        is_service: Callable[[str | None], bool] = lambda _user: False,
    ) -> None:
        """``presence_for(user)``: whether the broker announces this user's presence (people, not services).
        ``store``: where persistent sessions and retained messages are kept across restarts.
        ``principal_for(user)``: the ACL identity of a session restored from ``store``.
        ``service_limits``: the bounds for service accounts (the bridge takes large batches)."""
        self.limits = limits
        self._service_limits = service_limits or limits
        self._is_service = is_service
        self.access = access
        self.store = store
        self._presence_for = presence_for
        self._principal_for = principal_for
        self.sessions: dict[str, Session] = {}
        self.tree = SubscriptionTree()
        self.shared = SharedSubscriptions()
        self.stats = Stats()
        self.fanout = Fanout(
            sessions=self.sessions, tree=self.tree, shared=self.shared, access=access, stats=self.stats
        )
        self.share_delivery = self.fanout.share_delivery
        self._background: set[asyncio.Task[None]] = set()
        self.retained = RetainedStore()
        self._online: dict[str, int] = {}
        self.presence_delay = PresenceDelay()  # offline announcements held for a will delay (broker.presence_delay)
        #: Set when the broker shuts down: every member is going away, so none hands its shared messages to
        #: another (a clean one would lose them); a persistent member keeps them in the state file.
        self.stopping = False

    # Sessions -------------------------------------------------------------------------------------

    def open_session(
        self, client_id: str, username: str | None, *, clean: bool, principal: Any
    ) -> tuple[Session, bool]:
        """The session for a new connection and whether a stored one was resumed [MQTT-3.2.2-2, -3]."""
        existing = self.sessions.get(client_id)
        if existing is not None and (clean or existing.clean):
            self.discard_session(existing)
            existing = None
        if existing is not None:
            existing.principal = principal
            existing.username = username
            return existing, True
        session = Session(client_id, username, clean, limits=self._limits_for(username))
        session.principal = principal
        self.sessions[client_id] = session
        if not clean and self.store is not None:
            session.journal = self.store
            self.store.session_saved(client_id, username)
        return session, False

    async def restore(self) -> None:
        """Rebuild persistent sessions and retained messages from the store (before listening)."""
        if self.store is None:
            return
        state = self.store.load()
        for topic, payload, qos, properties in state.retained:
            if may_be_retained(topic):
                self.retained.put(topic, payload, qos, properties)
            else:  # a chat message retained by an older version: forget it, it would be stored again
                self.store.retained(topic, b"", 0)
        for stored in state.sessions.values():
            session = Session(stored.client_id, stored.username, False, limits=self._limits_for(stored.username))
            if not v5.session_restored(self, session, stored):
                self.store.session_deleted(stored.client_id)  # its MQTT 5 session expiry passed while we were down
                continue
            session.principal = self._principal_for(stored.username)
            for topic_filter, qos in stored.subscriptions.items():
                self.add_subscription(session, topic_filter, qos)  # no journal yet: already stored
            refill_session(session, stored, self.store)
            self.sessions[stored.client_id] = session
        will_delay.restart_wills(self, state.wills)  # of clients connected when the broker died
        await self._reset_presence()
        log.info(
            "restored %d persistent session(s), %d queued message(s), %d retained message(s)",
            len(state.sessions),
            sum(len(s.pending) for s in state.sessions.values()),
            len(state.retained),
        )

    def _limits_for(self, username: str | None) -> Limits:
        return self._service_limits if self._is_service(username) else self.limits

    async def _reset_presence(self) -> None:
        """After a restart nobody is connected: a retained "online" (left by a crash) becomes "offline"."""
        for retained in self.retained.all():
            user = retained.topic.removeprefix("presence/")
            if user == retained.topic or "/" in user:
                continue
            presence = parse_presence(retained.payload, datetime.now(UTC))
            if presence is not None and not isinstance(presence, Rejection) and presence.status == "online":
                await self._announce(user, "offline")

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once all state changed so far is durable (at once without a store)."""
        if self.store is None:
            callback()
        else:
            self.store.after_commit(callback)

    def discard_session(self, session: Session) -> None:
        """Forget a session and its subscriptions [MQTT-3.1.2-6]; what it held of shared subscriptions goes to
        other members."""
        for topic_filter in session.subscriptions:
            self._tree_remove(topic_filter, session.client_id)
        session.subscriptions.clear()
        orphans = session.take_shared(lambda message: message.share in self.shared.groups) if self.shared else []
        if orphans:
            self._spawn(self.share_delivery.redeliver(session, orphans))
        session.queue = None
        session.inflight.clear()
        if session.journal is not None:
            session.journal = None
            if self.store is not None:
                self.store.session_deleted(session.client_id)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    async def connected(self, session: Session) -> None:
        """The session's client is connected and ready; announce the user online if it is the first."""
        self.stats.connections += 1
        user = self._presence_user(session)
        if user is not None:
            self._online[user] = self._online.get(user, 0) + 1
            if self._online[user] == 1 and not self.presence_delay.back(user):  # not back within a will delay
                await self._announce(user, "online")

    async def disconnected(self, session: Session, *, will: Will | None, announce: bool = True) -> None:
        """The client went away: publish its will (if any), update presence, end a clean session."""
        self.stats.connections -= 1
        session.detach()
        user = self._presence_user(session)
        last = False
        if user is not None:
            self._online[user] -= 1
            last = self._online[user] == 0
            if last:
                del self._online[user]
        if will is not None and not self._is_own_presence(session, will.topic):
            extra = will_delay.message_properties(will)  # its Message Expiry Interval counts from now
            await self.publish(will.topic, will.payload, will.qos, will.retain, properties=extra)
        if user is not None and last and announce:  # held as long as a delayed will [MQTT-3.1.3-9]
            await self.presence_delay.offline(user, will_delay.left(session), self._announce)
        if self.shared and not self.stopping:
            await self.share_delivery.hand_over(session)
        if session.clean:
            self.discard_session(session)

    def _presence_user(self, session: Session) -> str | None:
        user = session.username
        if user is None or not self._presence_for(user):
            return None
        return user

    def _is_own_presence(self, session: Session, topic: str) -> bool:
        return session.username is not None and topic == f"presence/{session.username}"

    async def _announce(self, user: str, status: str) -> None:
        """Publish the user's retained presence, stamped with the broker's clock, to those allowed to read it.

        The retained copy changes at once (before any await), so a later subscriber always gets the latest
        state; each live delivery passes the same receive check as a client's message."""
        topic = presence_topic(user)
        payload = presence_payload(status, datetime.now(UTC))
        self._retain(topic, payload, 1)
        await self.fanout.route(topic, payload, 1)

    # Messages -------------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        *,
        internal: bool = False,
        properties: V5Properties | None = None,
    ) -> int:
        """Route one message to every matching session; return how many sessions it was offered to.
        ``internal``: the broker's own ($SYS), not counted as a client message and not persisted.
        ``properties``: the MQTT 5 part (properties passed on to v5 subscribers, expiry), if any."""
        if not internal:
            self.stats.messages_in[qos] += 1
        if retain and may_be_retained(topic):
            self._retain(topic, payload, qos, persist=not internal, properties=properties)
        return await self.fanout.route(topic, payload, qos, properties)

    def notify(self, topic: str, payload: bytes) -> None:
        """The broker's own QoS 1 message to a client (a refused message's notice on ``ack/{user}``), not retained;
        routed at once, or in the background where a receive check must ask the database."""
        routed = self.fanout.route_now(topic, payload, 1)
        if not isinstance(routed, int):
            self._spawn(_finish(routed))

    def publish_now(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: V5Properties | None = None
    ) -> Coroutine[Any, Any, int] | None:
        """A client's message, routed without waiting where the ACL's cache answers every receive check
        (None); otherwise the coroutine that finishes routing it (the caller awaits it before its next packet)."""
        self.stats.messages_in[qos] += 1
        if retain and may_be_retained(topic):
            self._retain(topic, payload, qos, properties=properties)
        routed = self.fanout.route_now(topic, payload, qos, properties)
        return None if isinstance(routed, int) else routed

    def _retain(
        self, topic: str, payload: bytes, qos: int, *, persist: bool = True, properties: V5Properties | None = None
    ) -> None:
        if self.retained.put(topic, payload, qos, properties) and persist and self.store is not None:
            self.store.retained(topic, payload, qos, properties)

    def add_subscription(self, session: Session, topic_filter: str, qos: int) -> None:
        """Add or replace a subscription (before the SUBACK goes out) [MQTT-3.8.4-3]; ``$share/{group}/{filter}``
        joins that share group (the filter must be well-formed: broker.routing.is_valid_filter)."""
        shared = split_shared(topic_filter)
        if topic_filter not in session.subscriptions and (shared[1] if shared else topic_filter)[:1] in ("+", "#"):
            session.root_wildcards += 1
        session.subscriptions[topic_filter] = qos
        if shared is None:
            self.tree.add(topic_filter, session.client_id, qos)
        else:
            self.shared.add(topic_filter, session.client_id, qos)
        if self.store is not None and session.journal is not None:
            self.store.subscribed(session.client_id, topic_filter, qos)

    async def send_retained(self, session: Session, topic_filter: str, qos: int) -> None:
        """Send the retained messages a new subscription matches, each only if the ACL lets it through; none for
        a shared subscription (MQTT 5 §3.3.1.3: on a new non-shared subscription only)."""
        if split_shared(topic_filter) is not None:
            return
        for retained in self.retained.matching(topic_filter):
            if await self.access.may_receive(session.principal, retained.topic):
                message = Outgoing(
                    retained.topic, retained.payload, min(qos, retained.qos), True, 0, None, retained.properties
                )
                self.fanout.deliver(session, message)

    def unsubscribe(self, session: Session, topic_filter: str) -> None:
        if session.subscriptions.pop(topic_filter, None) is not None:
            shared = self._tree_remove(topic_filter, session.client_id)
            if (shared or topic_filter)[:1] in ("+", "#"):
                session.root_wildcards -= 1
            if self.store is not None and session.journal is not None:
                self.store.unsubscribed(session.client_id, topic_filter)

    def _tree_remove(self, topic_filter: str, client_id: str) -> str | None:
        """Remove one subscription from the tree or its share group; the shared filter, if it was one."""
        shared = split_shared(topic_filter)
        if shared is None:
            self.tree.remove(topic_filter, client_id)
            return None
        self.shared.remove(topic_filter, client_id)
        return shared[1]

    def subscription_count(self) -> int:
        """Subscriptions held, a shared one once per member (as each session counts it)."""
        return len(self.tree) + self.shared.members

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _finish(routing: Coroutine[Any, Any, int]) -> None:
    await routing
