"""Structured logs: ``log.format: json`` prints one JSON object per line, with client id, user and topic."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from switchboard import logs
from switchboard.db import make_engine
from tests.conftest import Users
from tests.helpers import mosquitto_pub, run_mosquitto_pub, start_service, switchboard_env


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("broker.access", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_record_carries_the_bound_context_and_extra_wins() -> None:
    def in_a_connection_task() -> logging.LogRecord:
        logs.bind(client_id="phone-1", user="alice")
        record = _record("denied publish", topic="dm/bob/carol", user="carol")
        logs.ContextFilter().filter(record)
        return record

    record = contextvars.copy_context().run(in_a_connection_task)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "broker.access"
    assert entry["message"] == "denied publish"
    assert entry["time"].endswith("Z")
    # the bound client id, and the call's own user (the record is about carol, not the task's user)
    assert (entry["client_id"], entry["user"], entry["topic"]) == ("phone-1", "carol", "dm/bob/carol")


def test_json_record_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("bridge.consumer", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_record_lists_the_context_after_the_message() -> None:
    record = _record("refused", client_id="c1", user="bob")
    assert logs.TextFormatter().format(record).endswith("broker.access: refused [client_id=c1 user=bob]")


def _json_lines(output: str) -> list[dict[str, Any]]:
    """Every line the process printed, each of which must be a JSON object."""
    entries = []
    for line in output.splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a line that is not JSON: {line!r}")
    return entries


def test_stack_logs_json_with_client_id_user_and_topic(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/logs.db", SWITCHBOARD_LOG__FORMAT="json")
    up = start_service("up", env=env, cwd=tmp_path)
    try:
        mqtt_port = int(up.out.wait_for(r"mqtt listening on [\d.]+:(\d+)", 60).group(1))
        up.out.wait_for('"message": "ready', 60)
        engine = make_engine(env["SWITCHBOARD_DATABASE_URL"])
        alice, alice_pw = Users(engine).user("alice")
        bob, _ = Users(engine).user("bob")
        engine.dispose()

        # a wrong password, a publish as somebody else, and a message the broker's door refuses
        refused = run_mosquitto_pub(mqtt_port, alice, "wrong", f"dm/{bob}/{alice}", "x", extra=("-i", "bad-login"))
        assert refused.returncode != 0
        mosquitto_pub(mqtt_port, alice, alice_pw, f"dm/{bob}/{bob}", "forged", extra=("-i", "forger"))
        mosquitto_pub(mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", b"\xff not utf-8", extra=("-i", "sender"))

        up.out.wait_for("refused a message", 60)
    finally:
        assert up.stop() == 0, up.output()
    entries = _json_lines(up.output())

    def one(predicate: Any, what: str) -> dict[str, Any]:
        found = [entry for entry in entries if predicate(entry)]
        assert found, f"no record of {what} in:\n{up.output()}"
        return found[0]

    login = one(lambda e: "bad username or password" in e["message"], "the refused login")
    assert (login["level"], login["client_id"], login["user"]) == ("WARNING", "bad-login", alice)
    denied = one(lambda e: e["message"].startswith("denied publish"), "the denied publish")
    assert (denied["client_id"], denied["user"], denied["topic"]) == ("forger", alice, f"dm/{bob}/{bob}")
    connected = one(lambda e: e.get("client_id") == "sender" and "connected from" in e["message"], "a connect")
    assert connected["user"] == alice and connected["logger"] == "broker.handle_connect"
    rejection = one(lambda e: "refused a message" in e["message"] and e["client_id"] == "sender", "the door's refusal")
    assert (rejection["logger"], rejection["topic"], rejection["user"]) == ("broker.door", f"dm/{bob}/{alice}", alice)
    assert any(e["logger"] == "switchboard" and e["message"].startswith("stopped") for e in entries)
