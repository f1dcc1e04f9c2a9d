"""Each service run alone, started in the wrong order: the bridge and the API wait for what comes later."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from switchboard import accounts
from switchboard.db import make_engine
from tests.conftest import create_database, drop_database
from tests.helpers import free_port, mosquitto_pub, run_cli, start_service, switchboard_env, wait_for


@pytest.fixture
def late_database() -> Iterator[tuple[str, str]]:
    """A Postgres database name that does not exist yet, and the URL it will have."""
    name = f"switchboard_late_{secrets.token_hex(4)}"
    url = create_database(name)
    drop_database(name)
    yield name, url
    drop_database(name)


def test_bridge_and_api_wait_for_database_and_broker(late_database: tuple[str, str], tmp_path: Path) -> None:
    name, url = late_database
    mqtt_port, api_port = free_port(), free_port()
    env = switchboard_env(
        url,
        SWITCHBOARD_MQTT__PORT=str(mqtt_port),
        SWITCHBOARD_API__PORT=str(api_port),
        SWITCHBOARD_BRIDGE__BROKER_PORT=str(mqtt_port),
        SWITCHBOARD_BRIDGE__PASSWORD=secrets.token_urlsafe(16),
    )
    bridge = start_service("bridge", env=env, cwd=tmp_path)
    api = start_service("api", env=env, cwd=tmp_path)
    services = [bridge, api]
    try:
        api.out.wait_for("api listening", 60)
        health = f"http://127.0.0.1:{api_port}/healthz"
        assert httpx.get(health, trust_env=False).status_code == 503
        bridge.out.wait_for("bridge: waiting for the database", 60)

        create_database(name)
        assert run_cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
        assert httpx.get(health, trust_env=False).json() == {"status": "ok", "database": "ok"}
        engine = make_engine(url)
        with Session(engine) as session:
            accounts.create_user(session, "alice", "pw-a")
            accounts.create_user(session, "bob", "pw-b")
            session.commit()
        bridge.out.wait_for("bridge: waiting for the broker", 60)

        broker = start_service("broker", env=env, cwd=tmp_path)
        services.append(broker)
        broker.out.wait_for("mqtt listening", 60)
        bridge.out.wait_for("bridge: connected", 60)
        mosquitto_pub(mqtt_port, "alice", "pw-a", "dm/bob/alice", json.dumps({"id": "late-1", "body": "made it"}))

        def history() -> list[dict[str, object]]:
            response = httpx.get(
                f"http://127.0.0.1:{api_port}/v1/conversations/dm:alice:bob/messages",
                auth=("bob", "pw-b"),
                trust_env=False,
            )
            return list(response.json()["messages"])

        (message,) = wait_for(history, what="the message in the history API")
        assert (message["seq"], message["id"], message["body"]) == (1, "late-1", "made it")
        engine.dispose()
    finally:
        for service in services:
            assert service.stop() == 0, service.output()
