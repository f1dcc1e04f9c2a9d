"""Fixtures that start real services: a fresh Postgres database per run, SQLite files, and whole stacks.

Postgres must be running (``scripts/test`` starts it); ``TEST_PG_ADMIN_DSN`` says how to reach it as a
role that may create databases. Every test makes its own users with unique names, so tests never
depend on each other's leftovers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import accounts
from switchboard.db import make_engine, upgrade
from switchboard.tables import Role
from tests.deploy import Deployment
from tests.helpers import Stack, free_port, start_stack, wait_for
from tests.mqtt5 import V5Client
from tests.rawmqtt import RawClient

#: The longest test files, started first so that on several workers (scripts/test runs the whole suite with
#: pytest-xdist, a file per worker) none of them is left running alone at the end.
LONGEST_FIRST = ("test_api_schema.py", "test_web_app.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the longest files first (a stable sort: the order within and between the others is kept)."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)


ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=/var/run/postgresql dbname=postgres")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"cannot reach Postgres at TEST_PG_ADMIN_DSN={ADMIN_DSN!r} ({exc}); run the tests with scripts/test, "
            "which starts it",
            returncode=3,
        )


def _require_drop_force(admin: psycopg.Connection) -> None:
    """Stop the run unless the admin role may drop a database WITH (FORCE) while autovacuum works in it.

    Postgres 15 ends an autovacuum worker (a process of no role) for a role that is not a superuser only if it is
    a member of pg_signal_backend; otherwise the drop fails now and then, at whichever teardown meets a worker.
    """
    row = admin.execute(
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE') FROM pg_roles"
        " WHERE rolname = current_user"
    ).fetchone()
    if not (row and row[0]):
        pytest.exit(
            f"the role {admin.info.user!r} of TEST_PG_ADMIN_DSN cannot drop test databases WITH (FORCE) while "
            f'autovacuum works in them; as a superuser run GRANT pg_signal_backend TO "{admin.info.user}" '
            "(scripts/test does it)",
            returncode=3,
        )


def create_database(name: str) -> str:
    """Create a database and return its SQLAlchemy URL."""
    with _admin() as admin:
        _require_drop_force(admin)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        info = admin.info
        host, port, user = info.host, info.port, info.user
    return f"postgresql+psycopg://{user}@/{name}?host={host}&port={port}"


def drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def migrated_database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database of ``kind`` ("postgres" or "sqlite"), dropped at the end (Postgres)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'switchboard.db'}"
    else:
        name = f"switchboard_test_{secrets.token_hex(4)}"
        url = create_database(name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    if kind != "sqlite":
        drop_database(name)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated Postgres database for this test run, dropped at the end."""
    with migrated_database("postgres", tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated SQLite file for this test run."""
    with migrated_database("sqlite", tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses this runs on Postgres and on SQLite."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``switchboard up`` as a real process on ephemeral ports, stopped with Ctrl-C (SIGINT) at the end."""
    workdir: Path = tmp_path_factory.mktemp("stack")
    # An hour-long directory cache: every user and membership change the tests make must reach the broker
    # through directory events (broker/directory_watch.py), never by the cache expiring.
    running = start_stack(database_url, workdir, SWITCHBOARD_MQTT__DIRECTORY_CACHE_SECONDS="3600")
    yield running
    assert running.stop() == 0, f"switchboard up did not stop cleanly:\n{running.output()}"


class Users:
    """Makes users and groups with names unique to the test."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.suffix = secrets.token_hex(3)

    def user(self, name: str, password: str | None = None, role: Role = Role.USER) -> tuple[str, str]:
        full, password = f"{name}-{self.suffix}", password or f"pw-{name}-{secrets.token_hex(4)}"
        with Session(self.engine) as session:
            accounts.create_user(session, full, password, role)
            session.commit()
        return full, password

    def group(self, name: str, members: list[str]) -> str:
        full = f"{name}-{self.suffix}"
        with Session(self.engine) as session:
            accounts.create_group(session, full, members)
            session.commit()
        return full


@contextmanager
def stack_users(stack: Stack) -> Iterator[Users]:
    """Users made in a stack's own database (for tests that start a stack of their own)."""
    engine = make_engine(stack.database_url)
    try:
        yield Users(engine)
    finally:
        engine.dispose()


@pytest.fixture
def users(engine: Engine) -> Users:
    return Users(engine)


#: The chat stack's bridge password, so a test can take over the bridge's session and make it reconnect.
CHAT_BRIDGE_PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def chat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on its own SQLite file, for broker tests that do not depend on the database kind."""
    url = f"sqlite:///{tmp_path_factory.mktemp('chat')}/chat.db"
    running = start_stack(
        url,
        tmp_path_factory.mktemp("chat-stack"),
        SWITCHBOARD_MQTT__SYS_INTERVAL="1",
        SWITCHBOARD_BRIDGE__PASSWORD=CHAT_BRIDGE_PASSWORD,
    )
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture
def chat_users(chat_stack: Stack) -> Iterator[Users]:
    engine = make_engine(chat_stack.database_url)
    yield Users(engine)
    engine.dispose()


#: Small limits, so tests can reach them with a handful of messages.
OPEN_LIMITS = {
    "SWITCHBOARD_MQTT__ALLOW_ANONYMOUS": "true",
    "SWITCHBOARD_MQTT__MAX_QUEUED_MESSAGES": "5",
    "SWITCHBOARD_MQTT__MAX_INFLIGHT": "3",
    "SWITCHBOARD_MQTT__MAX_CONNECTIONS": "60",
    "SWITCHBOARD_MQTT__MAX_PACKET_BYTES": "2048",
    "SWITCHBOARD_MQTT__MAX_SUBSCRIPTIONS": "20",
}


@pytest.fixture(scope="session")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack serving anonymous generic MQTT clients, with small limits."""
    url = f"sqlite:///{tmp_path_factory.mktemp('open')}/open.db"
    running = start_stack(url, tmp_path_factory.mktemp("open-stack"), **OPEN_LIMITS)
    yield running
    assert running.stop() == 0, running.output()


def over_websocket(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs with ``v5_port`` "switchboard-ws" (``tests.mqtt5.OVER_TCP_AND_WS``)."""
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("v5_port") == "switchboard-ws"


@pytest.fixture
def raw(request: pytest.FixtureRequest) -> Iterator[Callable[..., RawClient]]:
    """Makes raw MQTT clients and closes every one of them after the test; over WebSocket by default when the
    test runs with ``v5_port`` "switchboard-ws", as ``clients``."""
    clients: list[RawClient] = []
    over_ws = over_websocket(request)

    def make(port: int, *, websocket: bool = over_ws) -> RawClient:
        client = RawClient(port, websocket=websocket)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def postgres_deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Broker and bridge as separate processes on a fresh Postgres database of their own."""
    name = f"switchboard_deploy_{secrets.token_hex(4)}"
    deployment = Deployment(create_database(name), tmp_path)
    yield deployment
    deployment.close()
    drop_database(name)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An anonymous Mosquitto on a free port: the same behaviour from a broker nobody here wrote."""
    port, conf = free_port(), tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _accepts(port), timeout=15, what="mosquitto to listen")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        RawClient(port).close()
        return True
    except OSError:
        return False


@pytest.fixture
def clients(request: pytest.FixtureRequest) -> Iterator[Callable[..., V5Client]]:
    """Makes paho-mqtt MQTT 5 clients (tests/mqtt5.py) and closes every one of them after the test; over
    WebSocket by default when the test runs with ``v5_port`` "switchboard-ws" (``tests.mqtt5.OVER_TCP_AND_WS``)."""
    made: list[V5Client] = []
    over_ws = over_websocket(request)

    def make(
        port: int,
        client_id: str | None = None,
        user: str | None = None,
        password: str | None = None,
        *,
        websocket: bool = over_ws,
        version: int = 5,
    ) -> V5Client:
        client = V5Client(port, client_id, user, password, websocket=websocket, version=version)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(params=["switchboard", "mosquitto"])
def v5_port(request: pytest.FixtureRequest, open_stack: Stack) -> int:
    """Switchboard, and the same test against Mosquitto 2.0 (anonymous): the behaviour both brokers share.
    (Mosquitto 2.0.11 sends no DISCONNECT on takeover, keep-alive timeout or a malformed packet: those tests
    run on Switchboard only.) "switchboard-ws" is Switchboard's WebSocket port, for tests marked
    ``tests.mqtt5.OVER_TCP_AND_WS``."""
    if request.param == "switchboard":
        return open_stack.mqtt_port
    if request.param == "switchboard-ws":
        return open_stack.ws_port
    return int(request.getfixturevalue("mosquitto"))


#: The door stack's rate limit: small enough for a test to reach with a handful of messages, never refilled
#: within one (a token every 10 s).
DOOR_RATE, DOOR_BURST = 0.1, 10


@pytest.fixture(scope="session")
def door_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose broker refuses what issue 16's door refuses early: a rate limit a test reaches and
    chat.dm_policy shared_group, on Postgres and SQLite (directory changes reach it only through events).
    It has a database of its own: its bridge would otherwise take the live events (REST receipts and
    unsends) the API of ``stack`` queues, and publish them on this broker instead of that one."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    with migrated_database(kind, tmp_path_factory) as own_url:
        running = start_stack(
            own_url,
            tmp_path_factory.mktemp("door"),
            SWITCHBOARD_MQTT__PUBLISH_RATE=str(DOOR_RATE),
            SWITCHBOARD_MQTT__PUBLISH_BURST=str(DOOR_BURST),
            SWITCHBOARD_CHAT__DM_POLICY="shared_group",
            SWITCHBOARD_MQTT__DIRECTORY_CACHE_SECONDS="3600",
        )
        yield running
        assert running.stop() == 0, running.output()


@pytest.fixture
def door_users(door_stack: Stack) -> Iterator[Users]:
    with stack_users(door_stack) as made:
        yield made
