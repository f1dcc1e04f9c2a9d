"""Blocking over REST (issue 16 §3): ``PUT``/``DELETE /v1/blocks/{user}`` and ``GET /v1/blocks`` against a real
stack on Postgres and SQLite. Changes are idempotent, errors say what is wrong, each change writes one
directory event (the blocker's, no group) in its transaction, and ``/v1/sync`` shows blocks to nobody."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import Engine, select
from sqlmodel import col

from switchboard.tables import DirectoryChange, DirectoryEvent
from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub, wait_for


def _events(engine: Engine, user: str) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        query = select(col(DirectoryEvent.change), col(DirectoryEvent.group_name)).where(
            col(DirectoryEvent.user_name) == user
        )
        rows = connection.execute(query.order_by(col(DirectoryEvent.position)))
        return [(change, group) for change, group in rows]


def test_block_list_and_unblock_are_idempotent_and_recorded_as_directory_events(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    with stack.http(*alice) as http:
        assert http.get("/v1/blocks").json() == {"blocks": []}
        first = http.put(f"/v1/blocks/{bob[0]}")
        assert first.status_code == 200, first.text
        assert first.json()["user"] == bob[0]
        again = http.put(f"/v1/blocks/{bob[0]}")  # idempotent: the same block, its first time kept
        assert again.status_code == 200 and again.json() == first.json()
        assert http.put(f"/v1/blocks/{carol[0]}").status_code == 200
        assert [b["user"] for b in http.get("/v1/blocks").json()["blocks"]] == sorted([bob[0], carol[0]])
        assert http.delete(f"/v1/blocks/{carol[0]}").status_code == 204
        assert http.delete(f"/v1/blocks/{carol[0]}").status_code == 204  # not blocked any more: still 204
        assert http.get("/v1/blocks").json() == {"blocks": [first.json()]}
    with stack.http(*bob) as http:  # the list is the blocker's own: bob is not told
        assert http.get("/v1/blocks").json() == {"blocks": []}
    # One event per change, the blocker's, with no group (whom stays private); repeats record nothing.
    added, removed = DirectoryChange.BLOCK_ADDED.value, DirectoryChange.BLOCK_REMOVED.value
    assert [e for e in _events(users.engine, alice[0]) if e[0] != DirectoryChange.USER_CREATED] == [
        (added, None),
        (added, None),
        (removed, None),
    ]
    assert _events(users.engine, bob[0]) == [(DirectoryChange.USER_CREATED.value, None)]


def test_block_errors_say_what_is_wrong(stack: Stack, users: Users) -> None:
    alice = users.user("alice")
    with stack.http(*alice) as http:
        myself = http.put(f"/v1/blocks/{alice[0]}")
        assert myself.status_code == 400 and "cannot block yourself" in myself.json()["detail"]
        for method in ("PUT", "DELETE"):
            unknown = http.request(method, "/v1/blocks/nobody-at-all-here")
            assert unknown.status_code == 404, (method, unknown.text)
            assert unknown.json()["detail"] == "user 'nobody-at-all-here' does not exist"
            bad = http.request(method, "/v1/blocks/bad name!")
            assert bad.status_code == 422 and "pattern" in bad.text
        assert http.get("/v1/blocks").json() == {"blocks": []}  # none of these blocked anything
    with httpx.Client(base_url=stack.api, trust_env=False) as anonymous:
        assert anonymous.get("/v1/blocks").status_code == 401
        assert anonymous.put(f"/v1/blocks/{alice[0]}").status_code == 401


def test_sync_shows_block_events_to_nobody_not_even_the_blocker(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    group = users.group("team", [alice[0], bob[0], carol[0]])
    cursors: dict[str, str] = {}
    for who in (alice, bob, carol):
        with stack.http(*who) as http:
            cursors[who[0]] = http.get("/v1/sync").json()["next"]
    with stack.http(*alice) as http:
        assert http.put(f"/v1/blocks/{bob[0]}").status_code == 200
        assert http.delete(f"/v1/blocks/{bob[0]}").status_code == 204
        assert http.put(f"/v1/blocks/{bob[0]}").status_code == 200
    # A later change every member does see, so each sync below has read past the block events.
    mosquitto_pub(stack.mqtt_port, *carol, f"group/{group}/{carol[0]}", json.dumps({"id": "after", "body": "hi"}))
    for who in (alice, bob, carol):
        with stack.http(*who) as http:
            page = wait_for(
                lambda http=http, who=who: (
                    (found := http.get("/v1/sync", params={"since": cursors[who[0]]}).json())["messages"] and found
                ),
                what=f"{who[0]}'s sync",
            )
            assert page["memberships"] == [], (who[0], page["memberships"])
            assert int(page["next"].split(".")[3]) > int(cursors[who[0]].split(".")[3])  # past the events
