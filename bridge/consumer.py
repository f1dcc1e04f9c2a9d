"""MQTT in: the bridge's connection to the broker, batching, ack-after-commit and ``ack/{sender}`` replies.

The bridge keeps a persistent session (clean_session=0) subscribed at QoS 1 to ``dm/#`` and ``group/#``
(messages), ``presence/+`` and ``receipt/#`` (watermarks), through its own MQTT client
(:mod:`bridge.mqtt_client`), which acknowledges nothing by itself. Here a batch is acknowledged only after
the transaction that stores it has committed: a crash before that leaves it unacknowledged, the broker
sends it again, and the ``(sender, id)`` key makes the repeat a no-op. While the database is unreachable
the bridge holds its batch and retries with capped backoff; once it holds two batches' worth it reads
nothing more from the socket, so the broker keeps queueing.

:meth:`Bridge.stop` (SIGTERM) takes nothing new, finishes the batch being stored (commit, PUBACKs,
``ack/{sender}``), then disconnects cleanly; what it had received but not begun stays unacknowledged
in its broker session and comes back to the next bridge. A batch still held after
``bridge.stop_timeout_seconds`` (the database is down) is given up, unacknowledged, the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Engine

from bridge.metrics import BridgeMetrics
from bridge.mqtt_client import BrokerConnection, BrokerUnavailable, Message, tls_context
from bridge.notifier import Notifier
from bridge.store import Outcome, Received, Recorded, Rejected, Replayed, Stored, rejection, save_batch
from switchboard.db import session_scope
from switchboard.errors import StoreError
from switchboard.partitions import keep_message_partitions
from switchboard.payloads import ack_payload, refusal_payload
from switchboard.settings import BridgeSettings, ChatSettings, NotifySettings
from switchboard.tables import RejectedMessage
from switchboard.topics import ack_topic

log = logging.getLogger(__name__)

TOPICS = ("dm/#", "group/#", "presence/+", "receipt/#")
MAX_BACKOFF_SECONDS = 10.0
CONFLICT_RETRIES = 3


class _Stopping(Exception):
    """The bridge was told to stop while it waited for the database: give up the batch, unacknowledged."""


def subscriptions(shared_group: str | None) -> list[tuple[str, int]]:
    """What the bridge subscribes to, through ``$share/{group}/`` when bridges share the load."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [(prefix + topic, 1) for topic in TOPICS]


class Bridge:
    """Moves messages from the broker into the database, for ever, reconnecting as needed."""

    def __init__(
        self,
        *,
        engine: Engine,
        settings: BridgeSettings,
        password: str,
        host: str,
        port: int,
        metrics: BridgeMetrics | None = None,
        notify: NotifySettings | None = None,
        chat: ChatSettings | None = None,
    ) -> None:
        self._engine = engine
        self._edit_window = timedelta(seconds=(chat or ChatSettings()).edit_window_seconds)
        self._notify = notify if notify is not None and notify.webhook_url is not None else None
        self._settings = settings
        self._password = password
        self._host = host
        self._port = port
        self._tls = tls_context(settings.broker_tls, settings.broker_ca_file)
        self.metrics = metrics or BridgeMetrics()
        self.connected = asyncio.Event()
        self._holding = 0
        self._received: deque[Message] = deque()
        self._connection: BrokerConnection | None = None
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._given_up = asyncio.Event()
        self._helpers: list[asyncio.Future[None]] = []
        self.metrics.track_lag(lambda: self._holding + len(self._received))

    def stop(self, timeout: float) -> None:
        """Finish the batch in hand and return from :meth:`run`; give the batch up after ``timeout`` s."""
        if not self._stopping.is_set():
            self._stopping.set()
            asyncio.get_running_loop().call_later(timeout, self._given_up.set)
            for helper in self._helpers:  # the notifier stops at once: the batch in hand has the database
                helper.cancel()

    async def run(self) -> None:
        """Connect, consume, and reconnect with capped backoff when the broker goes away, until stopped.
        Raises :class:`~bridge.mqtt_client.SubscriptionRefused` when the broker refuses a subscription (the
        bridge would sit connected storing nothing).

        Meanwhile keeps the monthly partitions of the messages table ahead of the clock (Postgres), and sends
        the notifications for offline users when ``notify.webhook_url`` is set."""
        self._helpers = [asyncio.ensure_future(keep_message_partitions(self._engine))]
        if self._notify is not None:
            self._helpers.append(asyncio.ensure_future(Notifier(self._engine, self._notify).run()))
        try:
            await self._run()
        finally:
            for helper in self._helpers:
                helper.cancel()

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._consume_one_connection()
            except BrokerUnavailable as exc:
                reason = f"waiting for the broker at {self._host}:{self._port} ({exc})"
            except StoreError as exc:  # unacknowledged messages come back when the session resumes
                reason = f"could not store messages ({exc}); reconnecting"
            else:
                delay = 0.5
                continue
            self.connected.clear()
            self.metrics.connected.set(0)
            if self._stopping.is_set():
                break
            log.warning("bridge: %s; retrying in %.1fs", reason, delay)
            await _sleep_unless(self._stopping, delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        self.connected.clear()
        self.metrics.connected.set(0)
        log.info("bridge: stopped")

    def _take(self, messages: list[Message]) -> None:
        """The messages of one read, as they are: no per-message wrapper, no queue with waiters to wake."""
        received = self._received
        received.extend(messages)
        self._arrived.set()
        if len(received) >= 2 * self._settings.batch_size and self._connection is not None:
            self._connection.hold_reading()  # resumed by _next_batch

    async def _consume_one_connection(self) -> None:
        self._received.clear()  # anything not acknowledged comes again on the new connection
        connection = BrokerConnection(
            host=self._host,
            port=self._port,
            username=self._settings.username,
            password=self._password,
            client_id=self._settings.client_id,
            on_messages=self._take,
            ssl_context=self._tls,
        )
        self._connection = None  # not held before the SUBACK is read
        await connection.connect()
        try:
            await connection.subscribe(subscriptions(self._settings.shared_group))
            self._connection = connection
            if len(self._received) >= 2 * self._settings.batch_size:
                connection.hold_reading()
            self.connected.set()
            self.metrics.connected.set(1)
            log.info("bridge: connected to %s:%d as %s", self._host, self._port, self._settings.username)
            while not self._stopping.is_set():
                batch = await self._next_batch(connection)
                if not batch:
                    break  # told to stop while waiting
                self._holding = len(batch)
                self.metrics.received.inc(len(batch))
                try:
                    outcomes = await self._store(batch)
                except _Stopping:
                    log.warning(
                        "bridge: stopping with %d message(s) not stored (database unreachable for "
                        "bridge.stop_timeout_seconds); the broker keeps them for the next bridge",
                        len(batch),
                    )
                    break
                connection.ack(batch)
                self._holding = 0
                self._count(batch, outcomes)
                self._publish_acks(connection, outcomes)
            # DISCONNECT goes out after the PUBACKs and replies queued above, in order.
            log.info("bridge: stopping; every batch taken is committed and acknowledged")
            await connection.disconnect()
        finally:
            connection.abort()

    async def _next_batch(self, connection: BrokerConnection) -> list[Message]:
        """Wait for one message, then take what else arrives within ``batch_wait_ms``, up to ``batch_size``.

        Empty when told to stop while waiting."""
        received = self._received
        if not received:
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait((arrived, connection.closed, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (arrived, stopping):
                    if not waiter.done():
                        waiter.cancel()
            if not received:
                if self._stopping.is_set():
                    return []
                reason = connection.closed.result() if connection.closed.done() else "closed"
                raise BrokerUnavailable(f"disconnected while waiting for messages: {reason}")
        size, wait = self._settings.batch_size, self._settings.batch_wait_ms / 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while len(received) < size and not connection.closed.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.001))
        count = min(size, len(received))
        batch = [received.popleft() for _ in range(count)]
        if len(received) < size:
            connection.resume_reading()
        return batch

    async def _store(self, batch: Sequence[Message]) -> list[Outcome]:
        """Commit the batch, waiting out database outages (nothing is acknowledged meanwhile)."""
        return await self._store_items(batch)

    async def _store_items(self, items: Sequence[Received]) -> list[Outcome]:
        delay, conflicts = 0.5, 0
        while True:
            started = time.monotonic()
            try:
                outcomes = await asyncio.to_thread(self._commit, items)
            except StoreError as exc:
                if exc.retryable:
                    self.metrics.waiting_for_database.set(1)
                    log.warning(
                        "bridge: waiting for the database (%s); holding %d message(s), retrying in %.1fs",
                        exc,
                        len(items),
                        delay,
                    )
                    await _sleep_unless(self._given_up, delay)
                    if self._given_up.is_set():
                        raise _Stopping from exc
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                    continue
                if exc.conflict and conflicts < CONFLICT_RETRIES:
                    conflicts += 1  # another bridge stored one of these first; try again and see its row
                    continue
                if len(items) == 1:
                    return [await self._reject_poison(items[0], exc)]
                log.warning("bridge: batch of %d failed (%s); storing one by one", len(items), exc)
                return [outcome for item in items for outcome in await self._store_items([item])]
            self.metrics.waiting_for_database.set(0)
            self.metrics.batch_size.observe(len(items))
            self.metrics.commit_seconds.observe(time.monotonic() - started)
            return outcomes

    async def _reject_poison(self, item: Received, error: StoreError) -> Outcome:
        """A message the database refuses on its own: keep it in rejected_messages, never stall on it."""
        reason = f"the database refused this message: {error}"
        log.error("bridge: %s (topic=%r)", reason, item.topic, extra={"topic": item.topic})

        def keep() -> None:
            with session_scope(self._engine) as session:
                session.add(RejectedMessage(topic=item.topic, payload=item.payload, reason=reason))

        await asyncio.to_thread(keep)
        return rejection(reason, item.topic, item.payload)

    def _commit(self, items: Sequence[Received]) -> list[Outcome]:
        with session_scope(self._engine) as session:
            return save_batch(
                session,
                items,
                preview_chars=self._notify.preview_chars if self._notify else None,
                edit_window=self._edit_window,
            )

    def _count(self, batch: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
        """The batch's outcomes into the metrics (one increment per counter per batch) and the log."""
        stored = duplicates = recorded = rejected = 0
        for message, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Stored):
                if outcome.duplicate:
                    duplicates += 1
                else:
                    stored += 1
            elif isinstance(outcome, Recorded):
                recorded += 1
            elif isinstance(outcome, Replayed):
                log.info(
                    "bridge: not storing the broker's retained copy of a message on %s again",
                    message.topic,
                    extra={"topic": message.topic},
                )
            else:
                rejected += 1
                log.info(
                    "bridge: rejected a message on %s: %s",
                    message.topic,
                    outcome.reason,
                    extra={"topic": message.topic},
                )
        for counter, count in (
            (self.metrics.stored, stored),
            (self.metrics.duplicates, duplicates),
            (self.metrics.recorded, recorded),
            (self.metrics.rejected, rejected),
        ):
            if count:
                counter.inc(count)

    @staticmethod
    def _publish_acks(connection: BrokerConnection, outcomes: Sequence[Outcome]) -> None:
        """Queue the ``ack/{sender}`` replies (QoS 1): they go out in order while the next batch is stored,
        instead of the bridge waiting for the broker's PUBACK of each. A stored message's reply says where it
        is; a refused chat message's says why (the same notice the broker's door sends)."""
        replies: list[tuple[str, bytes]] = []
        for o in outcomes:
            if isinstance(o, Stored):
                replies.append((ack_topic(o.sender), ack_payload(o.client_msg_id, o.conversation, o.seq, o.stored_at)))
            elif isinstance(o, Rejected) and o.notice is not None:
                notice = o.notice
                replies.append(
                    (ack_topic(notice.sender), refusal_payload(notice.client_msg_id, notice.conversation, o.reason))
                )
        connection.publish_replies(replies)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when ``event`` is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass
