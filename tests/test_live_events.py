"""The live-events outbox (switchboard.live_events) and its publisher (bridge/live_events.py), on fresh Postgres
and SQLite databases (no stack's bridge drains them meanwhile) and a real Mosquitto: events are leased to one
publisher at a time, published at QoS 1 in order, deleted only once the broker acknowledged them, and
published again when the PUBACK never came and the lease ran out (at least once, as QoS 1 is)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from bridge.live_events import LiveEvents
from bridge.mqtt_client import BrokerConnection, BrokerUnavailable, Message
from switchboard import live_events
from switchboard.db import make_engine, upgrade
from tests.conftest import create_database, drop_database


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    name = f"switchboard_live_{secrets.token_hex(4)}"
    url = create_database(name) if request.param == "postgres" else f"sqlite:///{tmp_path}/live.db"
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if request.param == "postgres":
            drop_database(name)


def _queue(engine: Engine, events: list[tuple[str, bytes]]) -> None:
    with Session(engine) as session:
        live_events.queue(session, events)
        session.commit()


def test_an_event_is_leased_to_one_publisher_until_its_lease_ends(fresh_engine: Engine) -> None:
    _queue(fresh_engine, [(f"live/{n}", str(n).encode()) for n in range(3)])
    first = live_events.claim(fresh_engine, limit=2, lease_seconds=60)
    assert [(e.topic, e.payload) for e in first] == [("live/0", b"0"), ("live/1", b"1")]  # oldest first
    second = live_events.claim(fresh_engine, limit=10, lease_seconds=60)
    assert [e.topic for e in second] == ["live/2"]  # the leased ones are skipped
    assert live_events.claim(fresh_engine, limit=10, lease_seconds=60) == []
    live_events.delete_published(fresh_engine, [e.id for e in first])
    _queue(fresh_engine, [("live/3", b"3")])
    expired = live_events.claim(fresh_engine, limit=10, lease_seconds=-1)  # a lease already over
    assert [e.topic for e in expired] == ["live/3"]
    assert [e.topic for e in live_events.claim(fresh_engine, limit=10, lease_seconds=60)] == ["live/3"]


def _connection(port: int, inbox: list[Message] | None = None) -> BrokerConnection:
    return BrokerConnection(
        host="127.0.0.1",
        port=port,
        username="",
        password="",
        client_id=f"live-{secrets.token_hex(4)}",
        on_messages=(inbox.extend if inbox is not None else lambda _messages: None),
    )


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(1000):  # 20 s
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_events_are_deleted_once_acknowledged_and_published_again_when_no_puback_came(
    fresh_engine: Engine, mosquitto: int
) -> None:
    topic = f"live-test/{secrets.token_hex(3)}"

    async def scenario() -> None:
        received: list[Message] = []
        reader = _connection(mosquitto, received)
        publisher = _connection(mosquitto)
        await reader.connect()
        await reader.subscribe([(topic, 1)])
        await publisher.connect()
        outbox = LiveEvents(fresh_engine, 0.01, lambda: publisher, lease_seconds=1.0, ack_timeout_seconds=0.5)
        try:
            _queue(fresh_engine, [(topic, b"one"), (topic, b"two")])
            publisher.hold_reading()  # the broker's PUBACKs go unread
            with pytest.raises(TimeoutError):
                await outbox.round(publisher)
            assert outbox.published == 0 and _left(fresh_engine) == 2  # kept: not known to have arrived
            publisher.resume_reading()
            published = asyncio.ensure_future(outbox.run())
            await _until(lambda: outbox.published == 2, "the lease to end and the events to go again")
            await _until(lambda: _left(fresh_engine) == 0, "the acknowledged events deleted")
            published.cancel()
            await _until(lambda: len(received) >= 4, "both publications of both events")
            assert [m.payload for m in received] == [b"one", b"two", b"one", b"two"]  # in order, at least once
            with pytest.raises(BrokerUnavailable):  # a connection that ended confirms nothing
                publisher.abort()
                await publisher.publish_confirmed([(topic, b"three")])
        finally:
            publisher.abort()
            reader.abort()

    asyncio.run(scenario())


def _left(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(live_events.LIVE_EVENTS)).scalar_one())


def test_on_postgres_a_notification_at_commit_wakes_the_publisher(mosquitto: int, tmp_path: Path) -> None:
    """The API's transaction notifies switchboard_live_events; with the bridge's own looks 10 minutes apart,
    events still go out as soon as they are committed (SQLite has no notifications: it polls)."""
    name = f"switchboard_live_{secrets.token_hex(4)}"
    engine = make_engine(create_database(name))
    topic = f"live-test/{secrets.token_hex(3)}"

    async def scenario() -> None:
        received: list[Message] = []
        reader, publisher = _connection(mosquitto, received), _connection(mosquitto)
        await reader.connect()
        await reader.subscribe([(topic, 1)])
        await publisher.connect()
        outbox = LiveEvents(engine, 600.0, lambda: publisher)
        running = asyncio.ensure_future(outbox.run())
        try:
            await _until(lambda: outbox.listening, "the LISTEN")
            for n, payload in enumerate((b"first", b"second"), start=1):
                _queue(engine, [(topic, payload)])
                await _until(lambda n=n: outbox.published == n, f"event {n} published")
            await _until(lambda: len(received) == 2, "both delivered")
            assert [m.payload for m in received] == [b"first", b"second"]
        finally:
            running.cancel()
            publisher.abort()
            reader.abort()

    try:
        upgrade(engine)
        asyncio.run(scenario())
    finally:
        engine.dispose()
        drop_database(name)
