"""Presence visibility over REST (issue 16 §3): ``GET /v1/presence`` shows a user's presence only to users who
share a conversation with it (a DM with messages, or a group), never across a block either way; anyone else
gets the 404 an unknown user gets, so presence does not reveal who has an account. Real stack, real MQTT
clients, Postgres and SQLite; and switchboard.social's rule on its own (the broker imports it)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import social
from switchboard.tables import Block
from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub, wait_for
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]


def _presence(http: httpx.Client, *names: str) -> httpx.Response:
    return http.get("/v1/presence", params=[("user", name) for name in names])


def _online(http: httpx.Client, name: str) -> bool:
    answer = _presence(http, name)
    return answer.status_code == 200 and answer.json()["presence"][0]["status"] == "online"


def test_presence_is_hidden_from_strangers_like_an_unknown_user(stack: Stack, users: Users, raw: Raw) -> None:
    alice, stranger = users.user("alice"), users.user("stranger")
    raw(stack.mqtt_port).connect(f"d-{secrets.token_hex(3)}", *alice)
    with stack.http(*alice) as http:  # her own presence is hers to see
        wait_for(lambda: _online(http, alice[0]), what="alice sees herself online")
    with stack.http(*stranger) as http:
        hidden, unknown = _presence(http, alice[0]), _presence(http, "nobody-at-all-here")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["detail"].replace(alice[0], "NAME") == unknown.json()["detail"].replace(
            "nobody-at-all-here", "NAME"
        )
        both = _presence(http, stranger[0], alice[0])  # one hidden name hides the answer, as an unknown one does
        assert both.status_code == 404
        assert alice[0] in both.json()["detail"] and stranger[0] not in both.json()["detail"]


def test_a_shared_group_or_a_dm_with_messages_shows_presence(stack: Stack, users: Users, raw: Raw) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    raw(stack.mqtt_port).connect(f"d-{secrets.token_hex(3)}", *alice)
    with stack.http(*bob) as http:
        assert _presence(http, alice[0]).status_code == 404
    users.group("pair", [alice[0], bob[0]])
    with stack.http(*bob) as http:
        wait_for(lambda: _online(http, alice[0]), what="bob sees alice once they share a group")
    with stack.http(*carol) as http:
        assert _presence(http, alice[0]).status_code == 404  # a DM with no message yet shares nothing
    mosquitto_pub(stack.mqtt_port, *carol, f"dm/{alice[0]}/{carol[0]}", json.dumps({"id": "hi", "body": "hi"}))
    with stack.http(*carol) as http:
        wait_for(lambda: _online(http, alice[0]), what="carol sees alice once their DM has a message")
    with stack.http(*alice) as http:  # both ways
        answer = _presence(http, carol[0], bob[0])
        assert answer.status_code == 200
        assert [p["user"] for p in answer.json()["presence"]] == [carol[0], bob[0]]


def test_a_block_hides_presence_both_ways_until_lifted(stack: Stack, users: Users, raw: Raw) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    users.group("pair", [alice[0], bob[0]])
    raw(stack.mqtt_port).connect(f"d-{secrets.token_hex(3)}", *alice)
    raw(stack.mqtt_port).connect(f"d-{secrets.token_hex(3)}", *bob)
    with stack.http(*alice) as a, stack.http(*bob) as b:
        wait_for(lambda: _online(a, bob[0]) and _online(b, alice[0]), what="both see each other")
        assert a.put(f"/v1/blocks/{bob[0]}").status_code == 200
        assert _presence(a, bob[0]).status_code == 404  # the blocker no longer sees the blocked
        assert _presence(b, alice[0]).status_code == 404  # nor the blocked the blocker
        assert a.delete(f"/v1/blocks/{bob[0]}").status_code == 204
        assert _online(a, bob[0]) and _online(b, alice[0])


def test_the_rule_as_core_statements(engine: Engine, users: Users) -> None:
    """switchboard.social on a plain connection: groups and DMs share, blocks hide, itself always visible."""
    alice, bob, carol, dave = (users.user(n)[0] for n in ("alice", "bob", "carol", "dave"))
    users.group("trio", [alice, bob, carol])
    with engine.begin() as connection:
        assert social.visible_presence(connection, alice, [alice, bob, carol, dave]) == {alice, bob, carol}
        assert social.presence_audience(connection, alice) == {bob, carol}
        assert social.may_see_presence(connection, bob, alice) and not social.may_see_presence(connection, dave, alice)
    with Session(engine) as session:
        session.add(Block(blocker=carol, blocked=alice))
        session.commit()
    with engine.begin() as connection:
        assert social.visible_presence(connection, alice, [bob, carol]) == {bob}
        assert social.visible_presence(connection, carol, [alice, bob]) == {bob}
        assert social.presence_audience(connection, alice) == {bob}
        assert social.has_blocked(connection, carol, alice) and not social.has_blocked(connection, alice, carol)
        assert social.blocked_between(connection, alice, carol) and not social.blocked_between(connection, alice, bob)
