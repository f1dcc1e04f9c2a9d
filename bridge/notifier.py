"""Sends the notification outbox (:mod:`bridge.outbox`) to the operator's webhook, batched per user.

Every ``poll`` the notifier takes into a batch each user's waiting rows once the oldest has waited
``notify.batch_seconds`` (so a burst of messages becomes one notification), then POSTs each due batch::

    {"id": "<batch id>", "user": "bob", "conversation": "dm:alice:bob", "seq": 50, "sender": "alice",
     "preview": "the newest message's start", "count": 50, "conversations": ["dm:alice:bob"]}

``conversation``, ``seq``, ``sender`` and ``preview`` are those of the newest message in the batch. The
body is signed: ``X-Switchboard-Signature: sha256=HEX`` is HMAC-SHA256 with ``notify.secret`` over
``TIMESTAMP.BODY``, ``TIMESTAMP`` being ``X-Switchboard-Timestamp`` (Unix seconds). A 2xx answer marks the
batch sent; anything else (or no answer) retries the same batch, same id and same rows, after 1, 2, 4 ...
seconds up to ``notify.max_backoff_seconds``, for ever: a notification is never dropped. A batch is sent
again only when the notifier cannot know it arrived (it stopped between the POST and marking it sent):
receivers drop a repeated ``id`` (also in ``X-Switchboard-Notification-Id``), so no message is
notified twice. Several bridges may run notifiers: a row is taken into one batch only, and each attempt
at a batch is leased to one notifier (for ``notify.timeout_seconds`` + 5 s).

A batch holds at most ``notify.batch_max_messages`` rows (a bigger backlog is sent as several batches).
The database work (:mod:`bridge.batching`) is short transactions over the rows at hand, never over the
whole outbox, so a burst into a big group never holds the database for long (SQLite has one writer):
batches are taken ``SENDS_AT_ONCE`` at a time (fewer once they hold ``ROWS_PER_TRANSACTION`` rows), posted
at once, and marked together. That work runs in a daemon thread (:mod:`bridge.daemon`), so a stopping
process never waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from functools import partial

import httpx
from sqlalchemy import Engine

from bridge import batching
from bridge.batching import Batch
from bridge.daemon import DaemonWorker
from switchboard.settings import NotifySettings
from switchboard.tables import utcnow

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
LEASE_MARGIN_SECONDS = 5.0
#: Due retries and ready users taken per round; a round that fills a page is followed at once by another.
PAGE = 100
#: Batches taken in one transaction and sent at once.
SENDS_AT_ONCE = 16
#: A transaction takes no more users once its batches hold this many rows (each batch holds at most
#: notify.batch_max_messages).
ROWS_PER_TRANSACTION = 4000
#: Groups being posted at once: the next group is taken while one is posted.
GROUPS_IN_FLIGHT = 2
SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
ID_HEADER = "X-Switchboard-Notification-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Switchboard-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Notifier:
    """The outbox's sender; :meth:`run` until cancelled."""

    def __init__(self, engine: Engine, settings: NotifySettings) -> None:
        assert settings.webhook_url is not None and settings.secret is not None
        self._engine = engine
        self._settings = settings
        self._url = settings.webhook_url
        self._secret = settings.secret.get_secret_value()
        self._database = DaemonWorker("notifier-database")
        self._lease_seconds = settings.timeout_seconds + LEASE_MARGIN_SECONDS
        #: Pages of ready users go round by name, so a busy user early in the alphabet delays nobody.
        self._after = ""

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self._settings.timeout_seconds, trust_env=False) as client:
            while True:
                more = False
                try:
                    _, more = await self._round(client)
                except Exception:  # the database may be away; the rows wait in the outbox
                    log.exception("notifications: a round failed; trying again")
                if not more:
                    await asyncio.sleep(POLL_SECONDS)

    async def round(self, client: httpx.AsyncClient) -> int:
        """Send what is due (a page of retries, a page of new batches); how many batches were sent."""
        sent, _ = await self._round(client)
        return sent

    async def _round(self, client: httpx.AsyncClient) -> tuple[int, bool]:
        """How many batches were sent, and whether more may be waiting (a page was full).

        Batches are taken ``SENDS_AT_ONCE`` at a time in one transaction, posted at once (each well within
        its lease), then marked in one transaction: rows of neighbouring users share pages, and SQLite
        writes each page once per transaction. The next group is taken while one is being posted."""
        retries = await self._database.call(partial(batching.due, self._engine, PAGE))
        ready = utcnow() - timedelta(seconds=self._settings.batch_seconds)
        users = await self._database.call(partial(batching.ready_users, self._engine, ready, self._after, PAGE))
        self._after = users[-1] if len(users) == PAGE else ""
        more = len(retries) == PAGE or len(users) == PAGE
        limit = self._settings.batch_max_messages
        sent: list[int] = []
        posting = asyncio.Semaphore(GROUPS_IN_FLIGHT)
        async with asyncio.TaskGroup() as groups:
            while retries or users:
                await posting.acquire()
                if retries:
                    take, retries = retries[:SENDS_AT_ONCE], retries[SENDS_AT_ONCE:]
                    batches = await self._database.call(
                        partial(batching.lease, self._engine, take, lease_seconds=self._lease_seconds)
                    )
                else:
                    batches, served = await self._database.call(
                        partial(
                            batching.claim,
                            self._engine,
                            users[:SENDS_AT_ONCE],
                            limit=limit,
                            rows=ROWS_PER_TRANSACTION,
                            lease_seconds=self._lease_seconds,
                        )
                    )
                    users = users[served:]
                    more = more or any(batch.body["count"] >= limit for batch in batches)  # the user has more
                groups.create_task(self._send(client, batches, posting, sent))
        return sum(sent), more

    async def _send(
        self, client: httpx.AsyncClient, batches: list[Batch], posting: asyncio.Semaphore, sent: list[int]
    ) -> None:
        """Post a group of batches at once, then mark them sent or failed."""
        try:
            problems = await asyncio.gather(*(self._post(client, batch) for batch in batches))
            done = [batch.id for batch, problem in zip(batches, problems, strict=True) if problem is None]
            failed = [(batch, problem) for batch, problem in zip(batches, problems, strict=True) if problem]
            retry = [(batch.id, self._backoff(batch)) for batch, _ in failed]
            await self._database.call(partial(batching.mark_sent, self._engine, done))
            await self._database.call(partial(batching.mark_failed, self._engine, retry))
            for batch, problem in failed:  # logged once recorded: a stop right after the line loses no attempt
                self._log_failure(batch, problem)
            sent.append(len(done))
        finally:
            posting.release()

    async def _post(self, client: httpx.AsyncClient, batch: Batch) -> str | None:
        """POST the batch; None when the webhook took it, else what went wrong."""
        body = json.dumps(batch.body, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            ID_HEADER: batch.id,
        }
        try:
            answer = await client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"the webhook did not answer ({type(exc).__name__}: {exc})"
        return None if answer.is_success else f"the webhook answered {answer.status_code}"

    def _backoff(self, batch: Batch) -> float:
        """Seconds before the next attempt at a batch that failed."""
        return min(2.0**batch.attempts, self._settings.max_backoff_seconds)

    def _log_failure(self, batch: Batch, problem: str) -> None:
        log.warning(
            "notifications: %s for user=%s (batch %s, attempt %d); retrying in %.0fs",
            problem,
            batch.user,
            batch.id,
            batch.attempts + 1,
            self._backoff(batch),
            extra={"user": batch.user},
        )
