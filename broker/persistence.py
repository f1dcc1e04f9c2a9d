"""Broker state that survives a restart or a crash: persistent sessions, their subscriptions, queued and
in-flight messages, retained messages, delayed MQTT 5 wills and the wills of connected clients, in a SQLite file
the operator names (``mqtt.state_file``; its tables and their migrations are in ``broker.state_schema``). MQTT 5
state (session expiry, subscription options and identifiers, message properties and expiry) is kept beside the
3.1.1 state it belongs to.

amqtt 0.12.1 kept all of this in memory only. Writes are batched: changes are appended to a list and
committed together every few milliseconds (group commit, WAL mode). A publisher's PUBACK/PUBREC is
sent only after the commit that holds its message, so a message the broker acknowledged survives
``kill -9``. Clean sessions and QoS 0 messages are never written: MQTT does not ask them to outlive
the connection. The will of every connected client (clean or not; not one on its own ``presence/{user}``) is,
because a crash closes its connection without DISCONNECT and so must publish it [MQTT-3.1.2-8]: written with the
connection's first group commit (not before its CONNACK: a will accepted within the last ~2 ms before a
``kill -9`` is lost), removed when the connection ends (``broker.will_delay``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from broker.sessions import InFlight, Outgoing, Session, V5Properties, Will
from broker.state_schema import ADDED_COLUMNS, SCHEMA
from broker.v5 import expired

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.002
#: A message's MQTT 5 part as stored: forwarded property fields, wall-clock expiry, publisher, RETAIN as published.
V5Row = tuple[bytes | None, float | None, str | None, int]


@dataclass
class StoredSession:
    """A persistent session as loaded at start-up."""

    client_id: str
    username: str | None
    subscriptions: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[int, str, bytes, int, bool, int | None, bool, str | None]] = field(default_factory=list)
    incoming_qos2: set[int] = field(default_factory=set)
    expiry: int | None = None  # MQTT 5 Session Expiry Interval (None: a 3.1.1 session)
    expires_at: float | None = None  # wall clock (time.time()) when it ends; None: counted from start-up
    options: dict[str, int] = field(default_factory=dict)  # filter -> SUBSCRIBE options bits (MQTT 5)
    properties: dict[int, V5Properties] = field(default_factory=dict)  # pending row -> its MQTT 5 part
    ids: dict[str, int] = field(default_factory=dict)  # filter -> Subscription Identifier (MQTT 5)
    will: tuple[Will, float] | None = None  # a delayed MQTT 5 will and the wall-clock time it is due


@dataclass
class StoredState:
    sessions: dict[str, StoredSession]
    retained: list[tuple[str, bytes, int, V5Properties | None]]
    last_row: int
    #: Wills of clients connected when the broker died (``kill -9``), due at once: no delay, or no session left to
    #: wait in (a delayed one of a persistent session is its ``StoredSession.will``, counted from start-up).
    wills: list[tuple[str | None, Will]] = field(default_factory=list)


class StateStore:
    """Mirrors broker state into SQLite with group commit. All methods are called from the event loop."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" + SCHEMA)
        self._migrate()
        self._ops: list[tuple[str, tuple[Any, ...]]] = []
        self._callbacks: list[Callable[[], None]] = []
        self._last_row = 0
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._committing = False
        self.commits = 0
        #: Client ids whose will is kept as connected (``will_connected``), so its row goes when the connection does.
        self.live_wills: set[str] = set()

    def _migrate(self) -> None:
        """Add the columns a state file written by an older version lacks."""
        for table, column, alter in ADDED_COLUMNS:
            # PRAGMA takes no parameters; the table names are the fixed ones above
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(alter)

    # Start-up and shutdown ------------------------------------------------------------------------

    def load(self) -> StoredState:
        """Everything stored, to rebuild the hub before the listeners open."""
        sessions = {
            cid: StoredSession(cid, user, expiry=expiry, expires_at=expires_at)
            for cid, user, expiry, expires_at in self._db.execute(
                "SELECT client_id, username, expiry, expires_at FROM sessions"
            )
        }
        for client_id, topic_filter, qos, options, identifier in self._db.execute(
            "SELECT client_id, filter, qos, options, identifier FROM subscriptions"
        ):
            if client_id in sessions:
                sessions[client_id].subscriptions[topic_filter] = qos
                if options:
                    sessions[client_id].options[topic_filter] = options
                if identifier:
                    sessions[client_id].ids[topic_filter] = identifier
        rows = self._db.execute(
            "SELECT id, client_id, topic, payload, qos, retain, packet_id, released, share, "
            "properties, expires_at, origin, published_retain FROM pending ORDER BY id"
        )
        for row_id, client_id, topic, payload, qos, retain, packet_id, released, share, *v5 in rows:
            stored = sessions.get(client_id)
            if stored is None:
                continue
            stored.pending.append((row_id, topic, bytes(payload), qos, bool(retain), packet_id, bool(released), share))
            properties = _read_v5(*v5)
            if properties is not None:
                stored.properties[row_id] = properties
        for client_id, packet_id in self._db.execute("SELECT * FROM incoming_qos2"):
            if client_id in sessions:
                sessions[client_id].incoming_qos2.add(packet_id)
        wills = self._load_wills(sessions)
        retained = []
        for topic, payload, qos, *v5 in self._db.execute(
            "SELECT topic, payload, qos, properties, expires_at, origin, published_retain FROM retained"
        ):
            properties = _read_v5(*v5)
            if properties is not None and expired(properties):  # [MQTT-3.3.2-5]
                self.retained(topic, b"", 0)
                continue
            retained.append((topic, bytes(payload), qos, properties))
        self._last_row = self._db.execute("SELECT coalesce(max(id), 0) FROM pending").fetchone()[0]
        return StoredState(sessions, retained, self._last_row, wills)

    def _load_wills(self, sessions: dict[str, StoredSession]) -> list[tuple[str | None, Will]]:
        """Delayed wills back into their sessions; the wills of clients connected when the broker died: the crash
        closed their connections without a DISCONNECT, so each is published [MQTT-3.1.2-8], after its delay
        counted from start-up when its session waits for it (the client could not come back while the broker
        was down; a session's expiry counts from start-up in that case too), else at once (returned)."""
        due_now: list[tuple[str | None, Will]] = []
        rows = self._db.execute(
            "SELECT client_id, topic, payload, qos, retain, properties, expiry, due_at, delay FROM wills"
        )
        for client_id, topic, payload, qos, retain, fields, expiry, due_at, delay in rows:
            extra = V5Properties(bytes(fields)) if fields else None
            will = Will(topic, bytes(payload), qos, bool(retain), extra, expiry)
            stored = sessions.get(client_id)
            if due_at is None:  # its client was connected when the state was last written
                if stored is not None and delay:
                    stored.will = (will, time.time() + delay)
                    self.will_held(client_id, will, stored.will[1])
                else:
                    due_now.append((stored.username if stored is not None else None, will))
                    self.will_gone(client_id)
            elif stored is not None:
                stored.will = (will, due_at)
        return due_now

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        """Commit what is pending and close the file."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        ops, callbacks = self._take()
        await asyncio.to_thread(self._commit, ops)
        for callback in callbacks:
            callback()
        self._db.close()

    # Changes --------------------------------------------------------------------------------------

    def next_row(self) -> int:
        self._last_row += 1
        return self._last_row

    def session_saved(self, client_id: str, username: str | None) -> None:
        self._add("INSERT OR REPLACE INTO sessions (client_id, username) VALUES (?, ?)", (client_id, username))

    def session_expiry(self, client_id: str, interval: int | None, expires_at: float | None) -> None:
        """A v5 session's Session Expiry Interval and, once its client went away, the wall-clock time it ends."""
        self._add(
            "UPDATE sessions SET expiry = ?, expires_at = ? WHERE client_id = ?", (interval, expires_at, client_id)
        )

    def session_deleted(self, client_id: str) -> None:
        self.live_wills.discard(client_id)
        for table in ("sessions", "subscriptions", "pending", "incoming_qos2", "wills"):
            self._add(f"DELETE FROM {table} WHERE client_id = ?", (client_id,))  # noqa: S608 (fixed table names)

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        self._add(
            "INSERT OR REPLACE INTO subscriptions (client_id, filter, qos) VALUES (?, ?, ?)",
            (client_id, topic_filter, qos),
        )

    def subscription_options(self, client_id: str, topic_filter: str, options: int) -> None:
        """An MQTT 5 subscription's options (No Local, Retain As Published, Retain Handling bits)."""
        self._add(
            "UPDATE subscriptions SET options = ? WHERE client_id = ? AND filter = ?",
            (options, client_id, topic_filter),
        )

    def subscription_identifier(self, client_id: str, topic_filter: str, identifier: int | None) -> None:
        """An MQTT 5 subscription's Subscription Identifier (None: none)."""
        self._add(
            "UPDATE subscriptions SET identifier = ? WHERE client_id = ? AND filter = ?",
            (identifier, client_id, topic_filter),
        )

    def will_connected(self, client_id: str, will: Will, delay: int) -> None:
        """The will of a client now connected, and the delay it waits once the connection closes: published after a
        ``kill -9`` (``broker.will_delay.kept``)."""
        self.live_wills.add(client_id)
        self._will_row(client_id, will, None, delay)

    def will_held(self, client_id: str, will: Will, due_at: float) -> None:
        """A delayed MQTT 5 will and the wall-clock time it is due (``broker.will_delay``)."""
        self.live_wills.discard(client_id)
        self._will_row(client_id, will, due_at, None)

    def _will_row(self, client_id: str, will: Will, due_at: float | None, delay: int | None) -> None:
        fields = will.properties.fields if will.properties is not None else None
        self._add(
            "INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain, properties, expiry, due_at, delay) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (client_id, will.topic, will.payload, will.qos, int(will.retain), fields, will.expiry, due_at, delay),
        )

    def will_gone(self, client_id: str) -> None:
        self.live_wills.discard(client_id)
        self._add("DELETE FROM wills WHERE client_id = ?", (client_id,))

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        self._add("DELETE FROM subscriptions WHERE client_id = ? AND filter = ?", (client_id, topic_filter))

    def queued(
        self,
        row: int,
        client_id: str,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packet_id: int | None,
        share: str | None = None,
        properties: V5Properties | None = None,
    ) -> None:
        if properties is None:
            self._add(
                "INSERT INTO pending (id, client_id, topic, payload, qos, retain, packet_id, share) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row, client_id, topic, payload, qos, int(retain), packet_id, share),
            )
            return
        self._add(
            "INSERT INTO pending (id, client_id, topic, payload, qos, retain, packet_id, share, properties, "
            "expires_at, origin, published_retain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row, client_id, topic, payload, qos, int(retain), packet_id, share, *_write_v5(properties)),
        )

    def sent(self, row: int, packet_id: int) -> None:
        self._add("UPDATE pending SET packet_id = ? WHERE id = ?", (packet_id, row))

    def released(self, row: int) -> None:
        self._add("UPDATE pending SET released = 1 WHERE id = ?", (row,))

    def done(self, row: int) -> None:
        self._add("DELETE FROM pending WHERE id = ?", (row,))

    def incoming_added(self, client_id: str, packet_id: int) -> None:
        self._add("INSERT OR IGNORE INTO incoming_qos2 VALUES (?, ?)", (client_id, packet_id))

    def incoming_removed(self, client_id: str, packet_id: int) -> None:
        self._add("DELETE FROM incoming_qos2 WHERE client_id = ? AND packet_id = ?", (client_id, packet_id))

    def retained(self, topic: str, payload: bytes, qos: int, properties: V5Properties | None = None) -> None:
        if payload:
            self._add(
                "INSERT OR REPLACE INTO retained (topic, payload, qos, properties, expires_at, origin, "
                "published_retain) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (topic, payload, qos, *_write_v5(properties)),
            )
        else:
            self._add("DELETE FROM retained WHERE topic = ?", (topic,))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything changed so far is committed; callbacks run in the order given
        (PUBACKs must follow the order of the PUBLISHes [MQTT-4.6.0-2])."""
        if not self._ops and not self._callbacks and not self._committing:
            callback()
            return
        self._callbacks.append(callback)
        self._wake.set()

    def _add(self, sql: str, params: tuple[Any, ...]) -> None:
        self._ops.append((sql, params))
        self._wake.set()

    # Group commit ---------------------------------------------------------------------------------

    def _take(self) -> tuple[list[tuple[str, tuple[Any, ...]]], list[Callable[[], None]]]:
        ops, callbacks = self._ops, self._callbacks
        self._ops, self._callbacks = [], []
        return ops, callbacks

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)  # let a burst gather into one transaction
            self._wake.clear()
            ops, callbacks = self._take()
            self._committing = True
            try:
                await asyncio.to_thread(self._commit, ops)
            except sqlite3.Error:
                log.exception("broker state: commit to %s failed; acknowledgements are held back", self._path)
                self._ops[:0], self._callbacks[:0] = ops, callbacks
                await asyncio.sleep(1)
                self._wake.set()
                continue
            finally:
                self._committing = False
            for callback in callbacks:
                callback()

    def _commit(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        if ops:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    for sql, group in groupby(ops, key=lambda op: op[0]):
                        self._db.executemany(sql, [params for _, params in group])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            self.commits += 1


def _write_v5(properties: V5Properties | None) -> V5Row:
    """A message's MQTT 5 part as stored, its expiry as wall-clock time so that it keeps counting while the broker
    is down [MQTT-3.3.2-5]."""
    if properties is None:
        return None, None, None, 0
    expires_at = time.time() + (properties.expires - time.monotonic()) if properties.expires else None
    return properties.fields, expires_at, properties.origin, int(properties.retain)


def _read_v5(
    fields: bytes | None, expires_at: float | None, origin: str | None, published_retain: int | None
) -> V5Properties | None:
    """A stored MQTT 5 part back; its remaining expiry counts from the original publish [MQTT-3.3.2-6]."""
    if fields is None and expires_at is None and origin is None and not published_retain:
        return None
    expires = max(time.monotonic() + (expires_at - time.time()), 1e-9) if expires_at is not None else 0.0
    return V5Properties(bytes(fields or b""), expires, origin, bool(published_retain))


def refill_session(session: Session, stored: StoredSession, store: StateStore) -> None:
    """Put a restored session's QoS 2 receipts, queued and in-flight messages back, and journal it from now on.
    A message whose MQTT 5 expiry passed while the broker was down is dropped, never delivered [MQTT-3.3.2-5]."""
    session.incoming_qos2 = set(stored.incoming_qos2)
    session.journal = store
    for row, topic, payload, qos, retain, packet_id, released, share in stored.pending:
        properties = stored.properties.get(row)
        if properties is not None and expired(properties):
            store.done(row)
            continue
        message = Outgoing(topic, payload, qos, retain, row, share, properties)
        if packet_id is None:
            session.restore_queued(message)
        else:
            session.inflight[packet_id] = InFlight(packet_id, message, released)
            session.last_packet_id = packet_id
