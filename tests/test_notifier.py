"""The notifier against the outbox directly: two notifiers (two bridges) on one database send a batch once,
and a backlog bigger than notify.batch_max_messages goes out as several notifications, oldest first."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from bridge.notifier import Notifier
from switchboard.settings import NotifySettings
from switchboard.tables import Notification, utcnow
from tests.webhook import Webhook


def test_two_notifiers_send_each_batch_once(engine: Engine) -> None:
    webhook = Webhook()
    settings = NotifySettings(webhook_url=webhook.url, secret="s3cret", batch_seconds=0)
    user = f"offline-{id(webhook)}"
    with Session(engine) as session:
        for seq in (1, 2, 3):
            session.add(
                Notification(
                    user_name=user,
                    conversation_id="group:together",
                    seq=seq,
                    sender="alice",
                    preview=f"message {seq}",
                    created_at=utcnow() - timedelta(seconds=5),
                    next_attempt_at=utcnow() - timedelta(seconds=5),
                )
            )
        session.commit()

    webhook.delay = 1.0  # the first notifier is still waiting for its answer when the second looks

    async def rounds() -> list[int]:
        first, second = Notifier(engine, settings), Notifier(engine, settings)
        async with httpx.AsyncClient(trust_env=False) as a, httpx.AsyncClient(trust_env=False) as b:

            async def later() -> int:
                await asyncio.sleep(0.5)
                return await second.round(b)

            sent = list(await asyncio.gather(first.round(a), later()))
            sent += [await first.round(a), await second.round(b)]  # and nothing is left to send afterwards
            return sent

    try:
        sent = asyncio.run(rounds())
        calls = webhook.for_user(user)
        assert len(calls) == 1 and sum(sent) == 1
        assert (calls[0].json["count"], calls[0].json["seq"]) == (3, 3)
        with Session(engine) as session:
            rows = session.exec(select(Notification).where(Notification.user_name == user)).all()
        assert all(row.sent_at is not None and row.batch_id == calls[0].json["id"] for row in rows)
    finally:
        webhook.close()


def test_a_backlog_bigger_than_batch_max_messages_is_sent_as_several_notifications(engine: Engine) -> None:
    webhook = Webhook()
    settings = NotifySettings(webhook_url=webhook.url, secret="s3cret", batch_seconds=0, batch_max_messages=2)
    user = f"backlog-{id(webhook)}"
    with Session(engine) as session:
        for seq in range(1, 6):
            session.add(
                Notification(
                    user_name=user,
                    conversation_id="group:busy" if seq % 2 else "dm:alice:" + user,
                    seq=seq,
                    sender="alice",
                    preview=f"message {seq}",
                    created_at=utcnow() - timedelta(seconds=5),
                    next_attempt_at=utcnow() - timedelta(seconds=5),
                )
            )
        session.commit()

    async def rounds() -> int:
        notifier = Notifier(engine, settings)
        async with httpx.AsyncClient(trust_env=False) as client:
            return sum([await notifier.round(client) for _ in range(4)])

    try:
        assert asyncio.run(rounds()) == 3
        bodies = [call.json for call in webhook.for_user(user)]
        # Oldest first, at most two messages each; each notification names the conversations it covers.
        assert [(body["count"], body["seq"], body["conversations"]) for body in bodies] == [
            (2, 2, sorted(["group:busy", "dm:alice:" + user])),
            (2, 4, sorted(["group:busy", "dm:alice:" + user])),
            (1, 5, ["group:busy"]),
        ]
        assert len({body["id"] for body in bodies}) == 3
        with Session(engine) as session:
            rows = session.exec(select(Notification).where(Notification.user_name == user)).all()
        assert all(row.sent_at is not None for row in rows)
    finally:
        webhook.close()
