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
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from switchboard.db import session_scope
from switchboard.settings import NotifySettings
from switchboard.tables import Notification, utcnow

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
LEASE_MARGIN_SECONDS = 5.0
SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
ID_HEADER = "X-Switchboard-Notification-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Switchboard-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    user: str
    attempts: int
    body: dict[str, Any]


class Notifier:
    """The outbox's sender; :meth:`run` until cancelled."""

    def __init__(self, engine: Engine, settings: NotifySettings) -> None:
        assert settings.webhook_url is not None and settings.secret is not None
        self._engine = engine
        self._settings = settings
        self._url = settings.webhook_url
        self._secret = settings.secret.get_secret_value()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self._settings.timeout_seconds, trust_env=False) as client:
            while True:
                try:
                    await self.round(client)
                except Exception:  # the database may be away; the rows wait in the outbox
                    log.exception("notifications: a round failed; trying again")
                await asyncio.sleep(POLL_SECONDS)

    async def round(self, client: httpx.AsyncClient) -> int:
        """Batch what has waited long enough, send what is due; how many batches were sent."""
        batches = await asyncio.to_thread(self._due)
        sent = 0
        for batch in batches:
            if await self._send(client, batch):
                sent += 1
        return sent

    def _due(self) -> list[Batch]:
        now = utcnow()
        with session_scope(self._engine) as session:
            self._form_batches(session, now)
            return self._batches(session, now)

    def _form_batches(self, session: Session, now: Any) -> None:
        ready = now - timedelta(seconds=self._settings.batch_seconds)
        users = session.exec(
            select(Notification.user_name)
            .where(col(Notification.batch_id).is_(None), col(Notification.sent_at).is_(None))
            .group_by(col(Notification.user_name))
            .having(func.min(Notification.created_at) <= ready)
        ).all()
        for user in users:
            # Only rows not yet in a batch: another notifier's claim is never taken over.
            session.execute(
                update(Notification)
                .where(
                    col(Notification.user_name) == user,
                    col(Notification.batch_id).is_(None),
                    col(Notification.sent_at).is_(None),
                )
                .values(batch_id=uuid.uuid4().hex, next_attempt_at=now)
            )

    def _batches(self, session: Session, now: Any) -> list[Batch]:
        rows = session.exec(
            select(Notification)
            .where(
                col(Notification.sent_at).is_(None),
                col(Notification.batch_id).is_not(None),
                col(Notification.next_attempt_at) <= now,
            )
            .order_by(col(Notification.batch_id), col(Notification.id))
        ).all()
        grouped: dict[str, list[Notification]] = {}
        for row in rows:
            grouped.setdefault(row.batch_id or "", []).append(row)
        batches = []
        lease = now + timedelta(seconds=self._settings.timeout_seconds + LEASE_MARGIN_SECONDS)
        for batch_id, members in grouped.items():
            # Take this attempt: another notifier that read the batch as due too finds it leased and skips it;
            # if this one dies mid-send, the lease runs out and the batch is due again.
            taken = session.execute(
                update(Notification)
                .where(
                    col(Notification.batch_id) == batch_id,
                    col(Notification.sent_at).is_(None),
                    col(Notification.next_attempt_at) <= now,
                )
                .values(next_attempt_at=lease)
            )
            if not taken.rowcount:  # type: ignore[attr-defined]
                continue
            newest = members[-1]
            body = {
                "id": batch_id,
                "user": newest.user_name,
                "conversation": newest.conversation_id,
                "seq": newest.seq,
                "sender": newest.sender,
                "preview": newest.preview,
                "count": len(members),
                "conversations": sorted({m.conversation_id for m in members}),
            }
            batches.append(Batch(batch_id, newest.user_name, max(m.attempts for m in members), body))
        return batches

    async def _send(self, client: httpx.AsyncClient, batch: Batch) -> bool:
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
            problem = None if answer.is_success else f"the webhook answered {answer.status_code}"
        except httpx.HTTPError as exc:
            problem = f"the webhook did not answer ({type(exc).__name__}: {exc})"
        if problem is None:
            await asyncio.to_thread(self._mark_sent, batch.id)
            return True
        delay = min(2.0**batch.attempts, self._settings.max_backoff_seconds)
        log.warning(
            "notifications: %s for user=%s (batch %s, attempt %d); retrying in %.0fs",
            problem,
            batch.user,
            batch.id,
            batch.attempts + 1,
            delay,
            extra={"user": batch.user},
        )
        await asyncio.to_thread(self._mark_failed, batch.id, delay)
        return False

    def _mark_sent(self, batch_id: str) -> None:
        with session_scope(self._engine) as session:
            session.execute(update(Notification).where(col(Notification.batch_id) == batch_id).values(sent_at=utcnow()))

    def _mark_failed(self, batch_id: str, delay: float) -> None:
        with session_scope(self._engine) as session:
            session.execute(
                update(Notification)
                .where(col(Notification.batch_id) == batch_id)
                .values(
                    attempts=col(Notification.attempts) + 1,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            )
