"""GET /v1/sync?since=C&timeout=T: a long poll that answers as soon as a change for the caller commits, or
empty when the time is up (issue 18); on Postgres (LISTEN/NOTIFY) and SQLite (a shared poll), with a real
stack and real MQTT publishers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from switchboard.db import make_engine
from tests.conftest import Users
from tests.helpers import STARTUP_SECONDS, Stack, mosquitto_pub, start_service, switchboard_env, wait_for


def _poll_in_background(api: str, user: tuple[str, str], since: str, timeout: float) -> dict[str, Any]:
    """Start ``GET /v1/sync?since=&timeout=`` in a thread; the dict gets "answer" when it returns."""
    box: dict[str, Any] = {}

    def poll() -> None:
        with httpx.Client(base_url=api, auth=user, timeout=timeout + 30, trust_env=False) as http:
            box["answer"] = http.get("/v1/sync", params={"since": since, "timeout": timeout})

    box["thread"] = threading.Thread(target=poll, daemon=True)
    box["thread"].start()
    return box


def test_long_poll_answers_with_the_message_that_commits_while_it_waits(stack: Stack, users: Users) -> None:
    alice, bob, carol = (users.user(n) for n in ("alice", "bob", "carol"))
    with stack.http(*alice) as http:
        since = http.get("/v1/sync").json()["next"]
    box = _poll_in_background(stack.api, alice, since, 30)
    time.sleep(1.0)  # not a timing assertion: lets the request start waiting before anything commits
    assert "answer" not in box, "the long poll answered before anything changed"
    # a message alice does not read wakes nobody for her; hers answers her
    mosquitto_pub(stack.mqtt_port, *carol, f"dm/{bob[0]}/{carol[0]}", json.dumps({"id": "not-hers", "body": "x"}))
    mosquitto_pub(stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", json.dumps({"id": "hers", "body": "hello"}))
    box["thread"].join(60)
    answer = box["answer"]
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert [m["id"] for m in page["messages"]] == ["hers"]
    assert page["next"] != since and page["more"] is False
    # on Postgres the watch was woken by NOTIFY, not found by its fallback poll
    assert "LISTEN switchboard_streams failed" not in stack.output()


def test_long_poll_answers_at_once_when_something_is_already_there(stack: Stack, users: Users) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    with stack.http(*alice) as http:
        since = http.get("/v1/sync").json()["next"]
        mosquitto_pub(stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", json.dumps({"id": "early", "body": "x"}))
        wait_for(lambda: http.get("/v1/sync", params={"since": since}).json()["messages"] or None, what="the stored DM")
        page = http.get("/v1/sync", params={"since": since, "timeout": 60}, timeout=90).json()
        assert [m["id"] for m in page["messages"]] == ["early"]


def test_long_poll_wakes_on_a_membership_change_and_ends_empty_after_the_timeout(stack: Stack, users: Users) -> None:
    from switchboard.tables import Role

    alice = users.user("alice")
    admin = users.user("admin", role=Role.ADMIN)
    team = users.group("team", [admin[0]])
    with stack.http(*alice) as http:
        since = http.get("/v1/sync").json()["next"]
        quiet = http.get("/v1/sync", params={"since": since, "timeout": 1}, timeout=30)
        assert quiet.status_code == 200
        assert quiet.json() == {"messages": [], "receipts": [], "memberships": [], "next": since, "more": False}
    box = _poll_in_background(stack.api, alice, since, 30)
    time.sleep(1.0)
    with stack.http(*admin) as admin_http:
        assert admin_http.put(f"/v1/admin/groups/{team}/members/{alice[0]}").status_code == 204
    box["thread"].join(60)
    page = box["answer"].json()
    assert [(m["group"], m["user"], m["change"]) for m in page["memberships"]] == [(team, alice[0], "added")]


def test_timeout_is_checked_and_documented(stack: Stack, users: Users) -> None:
    alice = users.user("alice")
    with stack.http(*alice) as http:
        since = http.get("/v1/sync").json()["next"]
        for bad in ("61", "-1", "soon"):
            answer = http.get("/v1/sync", params={"since": since, "timeout": bad})
            assert answer.status_code == 422, (bad, answer.text)
        spec = http.get("/openapi.json").json()
    parameters = {p["name"]: p for p in spec["paths"]["/v1/sync"]["get"]["parameters"]}
    timeout = parameters["timeout"]
    assert timeout["in"] == "query" and timeout["schema"]["maximum"] == 60 and timeout["schema"]["minimum"] == 0
    assert "long poll" in timeout["description"].lower()


def test_a_stopping_api_answers_its_long_polls_at_once(sqlite_url: str, tmp_path: Path) -> None:
    """Ctrl-C: waiting requests get their (empty) page, rather than holding the graceful shutdown
    (api.stop_timeout_seconds) and then losing their connection."""
    service = start_service(
        "api", env=switchboard_env(sqlite_url, SWITCHBOARD_API__STOP_TIMEOUT_SECONDS="600"), cwd=tmp_path
    )
    port = int(service.out.wait_for(r"api listening on http://[\d.]+:(\d+)", STARTUP_SECONDS).group(1))
    engine = make_engine(sqlite_url)
    try:
        alice = Users(engine).user("alice")
    finally:
        engine.dispose()
    api = f"http://127.0.0.1:{port}"
    since = httpx.get(f"{api}/v1/sync", auth=alice, trust_env=False, timeout=10).json()["next"]
    box = _poll_in_background(api, alice, since, 60)
    time.sleep(1.0)
    assert "answer" not in box
    assert service.stop(timeout=60) == 0, service.output()
    box["thread"].join(30)
    assert box["answer"].status_code == 200
    assert box["answer"].json() == {"messages": [], "receipts": [], "memberships": [], "next": since, "more": False}
