"""Blocks and ``chat.dm_policy`` in the broker hooks (api/routes/hooks.py, api/routes/rabbitmq.py): with EMQX,
mosquitto-go-auth or RabbitMQ in front, a PUBLISH to ``dm/{recipient}/{me}`` is decided per topic as Switchboard's
broker decides it per message (switchboard.acl with switchboard.social's questions). Real HTTP to a
``switchboard api`` process run with ``chat.dm_policy: shared_group``, on Postgres and SQLite; no broker needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from bridge.store import Incoming, Stored, save_batch
from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import STARTUP_SECONDS, start_service, switchboard_env

User = tuple[str, str]


@pytest.fixture
def shared_group_api(database_url: str, tmp_path: Path) -> Iterator[str]:
    """``switchboard api`` alone, with ``chat.dm_policy: shared_group``."""
    env = switchboard_env(database_url, SWITCHBOARD_CHAT__DM_POLICY="shared_group")
    service = start_service("api", env=env, cwd=tmp_path)
    try:
        port = int(service.out.wait_for(r"api listening on http://[\d.]+:(\d+)", STARTUP_SECONDS).group(1))
        yield f"http://127.0.0.1:{port}"
    finally:
        assert service.stop() == 0, service.output()


class Hooks:
    """The three shapes an external broker asks in, as a service account (as RabbitMQ and go-auth call)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def emqx(self, user: str, topic: str) -> bool:
        answer = self.http.post("/v1/mqtt/acl", json={"username": user, "topic": topic, "action": "publish"})
        assert answer.status_code == 200, answer.text
        return answer.json()["result"] == "allow"

    def go_auth(self, user: str, topic: str) -> bool:
        answer = self.http.post("/v1/mqtt/acl", data={"username": user, "topic": topic, "acc": "2"})
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["ok"])

    def rabbitmq(self, user: str, topic: str) -> bool:
        form = {"username": user, "vhost": "/", "resource": "topic", "name": "amq.topic", "permission": "write"}
        answer = self.http.post("/v1/mqtt/rabbitmq/topic", data={**form, "routing_key": topic.replace("/", ".")})
        assert answer.status_code == 200, answer.text
        return answer.text == "allow"

    def dm(self, sender: str, recipient: str) -> set[bool]:
        """The answers of the three to ``sender`` publishing a DM to ``recipient`` (one value when they agree)."""
        topic = f"dm/{recipient}/{sender}"
        return {self.emqx(sender, topic), self.go_auth(sender, topic), self.rabbitmq(sender, topic)}

    def reason(self, sender: str, recipient: str) -> str:
        topic = f"dm/{recipient}/{sender}"
        answer = self.http.post("/v1/mqtt/acl", json={"username": sender, "topic": topic, "action": "publish"})
        return str(answer.json()["error"])


@pytest.fixture
def hooks(shared_group_api: str, users: Users) -> Iterator[Hooks]:
    caller = users.user("rabbit", role=Role.SERVICE)
    with httpx.Client(base_url=shared_group_api, auth=caller, trust_env=False, timeout=10) as http:
        yield Hooks(http)


def _store_dm(engine: Engine, sender: str, recipient: str) -> None:
    """A DM stored as the bridge stores one (the two now have a DM conversation with a message)."""
    with Session(engine) as session:
        topic, payload = f"dm/{recipient}/{sender}", json.dumps({"id": "first", "body": "hi"}).encode()
        outcomes = save_batch(session, [Incoming(topic, payload)])
        assert isinstance(outcomes[0], Stored), outcomes
        session.commit()


def test_with_shared_group_a_dm_needs_a_shared_group_or_an_existing_dm(hooks: Hooks, users: Users) -> None:
    alice, bob, carol, dave = (users.user(name) for name in ("alice", "bob", "carol", "dave"))
    assert hooks.dm(alice[0], bob[0]) == {False}  # strangers
    assert hooks.reason(alice[0], bob[0]) == f"{bob[0]} is not accepting direct messages from you"
    assert hooks.dm(alice[0], alice[0]) == {True}  # a note to oneself
    users.group("team", [alice[0], bob[0]])
    assert hooks.dm(alice[0], bob[0]) == {True} and hooks.dm(bob[0], alice[0]) == {True}
    # carol and dave share no group; a DM dave started earlier (policy then "anyone") lets both go on.
    assert hooks.dm(carol[0], dave[0]) == {False}
    _store_dm(users.engine, dave[0], carol[0])
    assert hooks.dm(carol[0], dave[0]) == {True} and hooks.dm(dave[0], carol[0]) == {True}
    assert hooks.dm(carol[0], alice[0]) == {False}


def test_a_block_refuses_the_blocked_users_dms_to_the_blocker_only(
    hooks: Hooks, users: Users, shared_group_api: str
) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    users.group("team", [alice[0], bob[0]])
    assert hooks.dm(alice[0], bob[0]) == {True}
    with httpx.Client(base_url=shared_group_api, auth=bob, trust_env=False, timeout=10) as bob_http:
        assert bob_http.put(f"/v1/blocks/{alice[0]}").status_code in (200, 201)
        assert hooks.dm(alice[0], bob[0]) == {False}  # the very next question: the hooks cache nothing
        # Refused with the dm_policy's words: the sender is not told it was blocked.
        assert hooks.reason(alice[0], bob[0]) == f"{bob[0]} is not accepting direct messages from you"
        assert hooks.dm(bob[0], alice[0]) == {True}  # the blocker may still write
        group_topic = f"group/team-{users.suffix}/{alice[0]}"
        assert hooks.emqx(alice[0], group_topic) and hooks.rabbitmq(alice[0], group_topic)  # groups still flow
        assert bob_http.delete(f"/v1/blocks/{alice[0]}").status_code == 204
    assert hooks.dm(alice[0], bob[0]) == {True}


def test_the_bridges_service_account_may_publish_a_rest_unsend_on_a_dm_topic(hooks: Hooks, users: Users) -> None:
    """The bridge publishes an unsend made through REST on the unsent message's own topic (docs/protocol.md):
    its service account is not a member of anything and is never refused by dm_policy or a block."""
    bridge, alice, bob = users.user("bridge", role=Role.SERVICE), users.user("alice"), users.user("bob")
    topic = f"dm/{bob[0]}/{alice[0]}"
    assert hooks.emqx(bridge[0], topic) and hooks.go_auth(bridge[0], topic) and hooks.rabbitmq(bridge[0], topic)
    assert not hooks.emqx(bridge[0], f"presence/{alice[0]}")
