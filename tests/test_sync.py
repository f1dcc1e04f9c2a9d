"""GET /v1/sync: what changed for the caller since a cursor (messages, receipts, membership changes),
paged, never another user's, never skipping a change that commits late; on Postgres and SQLite."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import streams
from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub, wait_for


def _sync_all(http: httpx.Client, since: str, limit: int = 100) -> tuple[dict[str, list[Any]], str, int]:
    """Follow ``next`` while ``more``: everything since the cursor, the final cursor, and the calls made."""
    found: dict[str, list[Any]] = {"messages": [], "receipts": [], "memberships": []}
    calls = 0
    while True:
        answer = http.get("/v1/sync", params={"since": since, "limit": limit})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        calls += 1
        for kind in found:
            found[kind] += page[kind]
        since = page["next"]
        if not page["more"]:
            return found, since, calls


def test_sync_brings_messages_receipts_and_membership_changes(stack: Stack, users: Users) -> None:
    alice, bob, carol, mallory = (users.user(n) for n in ("alice", "bob", "carol", "mallory"))
    admin = users.user("admin", role=Role.ADMIN)
    team = users.group("team", [alice[0], bob[0]])
    with stack.http(*alice) as http, stack.http(*mallory) as mallory_http, stack.http(*admin) as admin_http:
        start = http.get("/v1/sync").json()
        assert (start["messages"], start["receipts"], start["memberships"], start["more"]) == ([], [], [], False)
        mallory_start = mallory_http.get("/v1/sync").json()["next"]

        for n in range(3):
            mosquitto_pub(
                stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", json.dumps({"id": f"d{n}", "body": f"d{n}"})
            )
        mosquitto_pub(stack.mqtt_port, *carol, f"dm/{bob[0]}/{carol[0]}", json.dumps({"id": "c0", "body": "not yours"}))
        for n in range(2):
            mosquitto_pub(stack.mqtt_port, *bob, f"group/{team}/{bob[0]}", json.dumps({"id": f"g{n}", "body": f"g{n}"}))

        def synced() -> dict[str, list[Any]] | None:
            found, _, _ = _sync_all(http, start["next"])
            return found if len(found["messages"]) >= 5 else None

        found = wait_for(synced, what="5 messages in alice's sync")
        assert sorted(m["id"] for m in found["messages"]) == ["d0", "d1", "d2", "g0", "g1"]
        dm = "dm:" + ":".join(sorted((alice[0], bob[0])))
        assert [m["seq"] for m in found["messages"] if m["conversation"] == dm] == [1, 2, 3]  # stored order

        # paged: the same changes a few at a time, each once
        paged, cursor, calls = _sync_all(http, start["next"], limit=2)
        assert calls >= 3 and [m["id"] for m in paged["messages"]] == [m["id"] for m in found["messages"]]
        again, same, _ = _sync_all(http, cursor)
        assert again == {"messages": [], "receipts": [], "memberships": []} and same == cursor

        # receipts in the caller's conversations (bob read the DM), membership changes in its groups
        with stack.http(*bob) as bob_http:
            assert bob_http.post(f"/v1/conversations/{dm}/read", json={"up_to_seq": 2}).status_code == 200
        assert admin_http.put(f"/v1/admin/groups/{team}/members/{carol[0]}").status_code == 204
        later, cursor, _ = _sync_all(http, cursor)
        assert [(r["conversation"], r["user"], r["read_seq"]) for r in later["receipts"]] == [(dm, bob[0], 2)]
        assert [(m["group"], m["user"], m["change"]) for m in later["memberships"]] == [(team, carol[0], "added")]
        assert later["messages"] == []

        # nobody else's: mallory saw none of it
        theirs, _, _ = _sync_all(mallory_http, mallory_start)
        assert theirs == {"messages": [], "receipts": [], "memberships": []}

        # removed from the group: alice sees her own removal, then nothing more from the group
        assert admin_http.delete(f"/v1/admin/groups/{team}/members/{alice[0]}").status_code == 204
        mosquitto_pub(stack.mqtt_port, *bob, f"group/{team}/{bob[0]}", json.dumps({"id": "g-after", "body": "x"}))
        mosquitto_pub(stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", json.dumps({"id": "d-after", "body": "x"}))

        def after_removal() -> dict[str, list[Any]] | None:
            found, _, _ = _sync_all(http, cursor)
            return found if found["messages"] else None

        final = wait_for(after_removal, what="the DM after the removal")
        assert [m["id"] for m in final["messages"]] == ["d-after"]
        assert [(m["user"], m["change"]) for m in final["memberships"]] == [(alice[0], "removed")]


def test_sync_refuses_bad_cursors_with_a_reason(stack: Stack, users: Users) -> None:
    alice = users.user("alice")
    with stack.http(*alice) as http:
        head = http.get("/v1/sync").json()["next"]
        for bad in ("garbage", "v1.1.2", "v2.1.2.3", "v1.-1.0.0", "v1.1.x.0", "v1.\u00b2.0.0", "v1.\u0663.0.0"):
            answer = http.get("/v1/sync", params={"since": bad})
            assert answer.status_code == 400 and "not a sync cursor" in answer.json()["detail"], (bad, answer.text)
        ahead = "v1." + ".".join(str(int(p) + 1000) for p in head.split(".")[1:])
        answer = http.get("/v1/sync", params={"since": ahead})
        assert answer.status_code == 400 and "ahead of this server" in answer.json()["detail"]
        assert http.get("/v1/sync", params={"since": head, "limit": 0}).status_code == 422
        assert http.get("/v1/sync", params={"since": head, "limit": 1001}).status_code == 422
    assert httpx.get(f"{stack.api}/v1/sync", trust_env=False).status_code == 401


def test_stream_positions_follow_commit_order(engine: Engine) -> None:
    """A writer that takes positions after another waits for it to commit, so a reader that has seen
    position p has seen everything below p: a sync cursor cannot skip a late commit."""
    first = Session(engine)
    taken = streams.advance(first, streams.RECEIPTS, 5)
    second: list[int] = []

    def later_writer() -> None:
        with Session(engine) as session:
            second.append(streams.advance(session, streams.RECEIPTS, 1))
            session.commit()

    thread = threading.Thread(target=later_writer)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive() and not second  # waiting for the first writer's commit
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert second == [taken + 1]
