"""A deployment of separate processes (``switchboard broker``, ``switchboard bridge``) for fault tests,
and a fast QoS 1 publisher (paho) that keeps its session across broker restarts.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from switchboard import accounts
from switchboard.db import make_engine, upgrade
from switchboard.tables import Message
from tests.helpers import Service, free_port, start_service, switchboard_env, wait_for


class Deployment:
    """Broker and bridge as separate processes on one database, the broker on a fixed port."""

    def __init__(self, database_url: str, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.engine: Engine = make_engine(database_url)
        upgrade(self.engine)
        self.env = switchboard_env(
            database_url,
            SWITCHBOARD_MQTT__PORT=str(self.port),
            SWITCHBOARD_BRIDGE__BROKER_PORT=str(self.port),
            SWITCHBOARD_BRIDGE__PASSWORD=secrets.token_urlsafe(16),
            # These tests send thousands of messages from one user as fast as they can: no rate limit.
            SWITCHBOARD_MQTT__PUBLISH_RATE="1000000",
            SWITCHBOARD_MQTT__PUBLISH_BURST="1000000",
            **settings,
        )
        self.broker: Service | None = None
        self.bridges: list[Service] = []

    def start_broker(self) -> Service:
        self.broker = start_service("broker", env=self.env, cwd=self.workdir)
        self.broker.out.wait_for("mqtt listening", 60)
        return self.broker

    def start_bridge(self, **settings: str) -> Service:
        bridge = start_service("bridge", env={**self.env, **settings}, cwd=self.workdir)
        self.bridges.append(bridge)
        return bridge

    def user(self, name: str) -> tuple[str, str]:
        password = f"pw-{secrets.token_hex(4)}"
        with Session(self.engine) as session:
            accounts.create_user(session, name, password)
            session.commit()
        return name, password

    def stored(self, conversation: str) -> list[tuple[int, str]]:
        """(seq, client id) of the conversation's stored messages, by seq."""
        with Session(self.engine) as session:
            query = (
                select(Message.seq, Message.client_msg_id)
                .where(Message.conversation_id == conversation)
                .order_by(col(Message.seq))
            )
            return [(seq, msg_id) for seq, msg_id in session.exec(query).all()]

    def wait_stored(self, conversation: str, count: int, timeout: float = 120) -> list[tuple[int, str]]:
        return wait_for(
            lambda: len(rows := self.stored(conversation)) >= count and rows,
            timeout=timeout,
            interval=0.5,
            what=f"{count} messages stored in {conversation}",
        )

    def close(self) -> None:
        for service in [*self.bridges, *([self.broker] if self.broker else [])]:
            if service.process.poll() is None:
                service.stop(signal.SIGKILL)
        self.engine.dispose()


class Publisher:
    """paho with a persistent session and a large in-flight window; it resends unacknowledged messages
    after a reconnect, as a real client does."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{user}-{secrets.token_hex(3)}", clean_session=False
        )
        self.client.username_pw_set(user, password)
        self.client.max_inflight_messages_set(200)
        self.client.reconnect_delay_set(0.2, 2)
        self._connected = threading.Event()
        self.connects = 0
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(20), "publisher could not connect"

    def _on_connect(self, *_args: object) -> None:
        self.connects += 1
        self._connected.set()

    def wait_reconnected(self, after: int, timeout: float = 60) -> None:
        """Wait until the client has connected more than ``after`` times (it reconnects by itself)."""
        wait_for(
            lambda: self.connects > after and self.client.is_connected(),
            timeout=timeout,
            what="the publisher to reconnect",
        )

    def publish(self, topic: str, payloads: list[bytes]) -> list[mqtt.MQTTMessageInfo]:
        return [self.client.publish(topic, payload, qos=1) for payload in payloads]

    @staticmethod
    def wait_acked(infos: list[mqtt.MQTTMessageInfo], timeout: float = 120) -> None:
        wait_for(
            lambda: all(info.is_published() for info in infos),
            timeout=timeout,
            interval=0.2,
            what=f"the broker to acknowledge {len(infos)} messages",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def json_payloads(prefix: str, count: int) -> list[bytes]:
    """``count`` JSON messages with ids ``{prefix}00000``, ``{prefix}00001`` ..."""
    return [json.dumps({"id": f"{prefix}{n:05d}", "body": f"message {n}"}).encode() for n in range(count)]


def assert_exactly_once_in_order(rows: list[tuple[int, str]], expected_ids: list[str]) -> None:
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), "seq must be 1, 2, 3 ... without gaps"
    assert [msg_id for _, msg_id in rows] == expected_ids
