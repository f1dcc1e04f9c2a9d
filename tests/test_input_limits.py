"""Limits on what a client sends: bodies over the limit are refused (413) before they are buffered, deeply
nested JSON is refused cleanly everywhere it is parsed (REST routes, broker hooks, MQTT payloads), and integers
past 64 bits answer 422 instead of overflowing in the database driver."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from switchboard.tables import Message, RejectedMessage, Role
from tests.conftest import Users, stack_users
from tests.helpers import Stack, mosquitto_pub, start_service, start_stack, switchboard_env, wait_for
from tests.rawmqtt import PUBACK, RawClient

Raw = Callable[[int], RawClient]

MiB = 1024 * 1024
DEEP = "[" * 100_000


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (httpx sends a generator chunked)."""
    for _ in range(total // size):
        yield b" " * size


def test_a_body_over_the_limit_is_refused_before_authentication(chat_stack: Stack) -> None:
    read = "/v1/conversations/dm:a:b/read"
    with httpx.Client(base_url=chat_stack.api, timeout=30, trust_env=False) as anonymous:
        declared = anonymous.post(read, content=b" " * (2 * MiB), headers={"content-type": "application/json"})
        assert declared.status_code == 413
        assert "larger than 1048576 bytes (api.max_body_bytes)" in declared.json()["detail"]
        assert declared.headers["connection"] == "close"
        chunked = anonymous.post(read, content=_chunks(2 * MiB), headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and "api.max_body_bytes" in chunked.json()["detail"]
        # Uploads have their own, larger limit; still checked before the caller is known.
        upload = anonymous.post(
            "/v1/media",
            content=b" " * (26 * MiB),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert upload.status_code == 413 and "(media.max_bytes)" in upload.json()["detail"]
        # Under the limit, the request goes on to authentication as before.
        assert anonymous.post(read, json={"up_to_seq": 1}).status_code == 401


def _peak_rss(pid: int) -> int:
    """VmHWM: the most memory the process has ever had resident, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _send_chunked(port: int, path: str, total: int) -> bytes:
    """POST ``total`` bytes chunked over a raw socket, as fast as the server takes them; the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        try:
            for _ in range(total // 0x10000):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: what we want
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def test_a_huge_chunked_body_does_not_grow_the_process(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/rss.db")
    api = start_service("api", env=env, cwd=tmp_path)
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        before = _peak_rss(api.process.pid)
        answer = _send_chunked(port, "/v1/conversations/dm:a:b/read", 64 * MiB)
        grown = _peak_rss(api.process.pid) - before
        assert grown < 16 * MiB, f"the process grew by {grown / MiB:.0f} MiB for a 64 MiB body"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]
    finally:
        assert api.stop() == 0, api.output()


class _Default(dict[str, str]):
    """Path parameters for str.format_map: the known ones, "1" for the rest."""

    def __missing__(self, key: str) -> str:
        return "1"


def test_deeply_nested_json_answers_400_on_every_route(chat_stack: Stack, chat_users: Users) -> None:
    admin = chat_users.user("admin", role=Role.ADMIN)
    bob = chat_users.user("bob")
    broker = chat_users.user("hook-broker", role=Role.SERVICE)  # the hooks answer only the external broker
    with chat_stack.http(*admin) as http:
        paths = http.get("/openapi.json").json()["paths"]
        checked = 0
        for template, operations in paths.items():
            values = {"conversation": f"dm:{admin[0]}:{bob[0]}", "name": bob[0], "group": "nogroup"}
            path = template.format_map(_Default(values))
            for method, operation in operations.items():
                if method not in ("post", "put", "patch"):
                    continue
                takes_json = "application/json" in operation.get("requestBody", {}).get("content", {})
                caller = broker if path.startswith("/v1/mqtt/") else admin
                answer = http.request(
                    method, path, content=DEEP, headers={"content-type": "application/json"}, auth=caller
                )
                assert answer.status_code < 500, (method, path, answer.text)
                if path.startswith("/v1/mqtt/rabbitmq/"):  # RabbitMQ's hooks read forms: not one, so deny
                    assert answer.status_code == 200 and answer.text == "deny", (method, path, answer.text)
                elif takes_json or path.startswith("/v1/mqtt/"):
                    assert answer.status_code == 400, (method, path, answer.text)
                    checked += 1
        assert checked >= 8  # the JSON routes and both broker hooks


def test_deeply_nested_and_overflowing_payloads_are_rejected_not_fatal(
    stack: Stack, users: Users, engine: Engine
) -> None:
    alice, alice_pw = users.user("alice")
    bob, _ = users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    deep_object = '{"a":' * 30_000
    too_big = json.dumps({"conversation": conversation, "up_to_seq": 2**64, "status": "read"})
    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", deep_object)
    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"receipt/{bob}/{alice}", DEEP)
    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"receipt/{bob}/{alice}", too_big)
    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": "ok", "body": "after"}))

    def stored() -> list[str]:
        with Session(engine) as session:
            query = select(Message.client_msg_id).where(Message.conversation_id == conversation)
            return list(session.exec(query).all())

    assert wait_for(stored, what="the message after the bad ones") == ["ok"]

    def reasons() -> list[str]:
        with Session(engine) as session:
            query = select(RejectedMessage.reason).where(col(RejectedMessage.topic).contains(alice))
            return sorted(session.exec(query).all())

    # The deep DM is refused by the broker's door (a notice to alice, tests/test_broker_door.py), the two
    # receipts by the bridge.
    found = wait_for(lambda: len(r := reasons()) == 2 and r, what="2 rejections")
    assert sum("nested too deeply" in reason for reason in found) == 1, found
    assert any("up_to_seq" in reason and str(2**63 - 1) in reason for reason in found), found


def test_integers_past_64_bits_answer_422(stack: Stack, users: Users, engine: Engine) -> None:
    alice, alice_pw = users.user("alice")
    bob, _ = users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice, bob)))
    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": "m", "body": "x"}))
    with stack.http(alice, alice_pw) as http:
        wait_for(lambda: http.get(f"/v1/conversations/{conversation}/messages").json()["messages"], what="stored")
        huge = str(2**64)
        for url in (
            f"/v1/conversations/{conversation}/messages?before={huge}",
            f"/v1/conversations/{conversation}/messages?after={huge}",
            f"/v1/conversations/{conversation}/messages?limit={huge}",
            f"/v1/messages/{conversation}/{huge}",
            f"/v1/sync?limit={huge}",
            "/v1/conversations?limit=" + huge,
        ):
            answer = http.get(url)
            assert answer.status_code == 422, (url, answer.status_code, answer.text)
        assert http.get(f"/v1/sync?since=v1.{huge}.0.0").status_code == 400  # not a cursor this server gave
        read = http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 2**64})
        assert read.status_code == 422
        # The largest accepted value is an ordinary miss, not an error.
        assert http.get(f"/v1/messages/{conversation}/{2**63 - 1}").status_code == 404
        assert http.get(f"/v1/conversations/{conversation}/messages?before={2**63 - 1}").status_code == 200


def test_a_deeply_nested_retained_presence_does_not_stop_the_broker_restarting(tmp_path: Path, raw: Raw) -> None:
    url = f"sqlite:///{tmp_path}/presence.db"
    stack = start_stack(url, tmp_path)
    try:
        with stack_users(stack) as users:
            alice, alice_pw = users.user("alice")
        client = raw(stack.mqtt_port)
        assert client.connect(f"p-{alice}", alice, alice_pw).body == b"\x00\x00"
        packet_id = client.publish(f"presence/{alice}", DEEP.encode(), qos=1, retain=True)
        assert client.expect(PUBACK).packet_id == packet_id  # retained and kept in the state file
    finally:
        stack.stop(signal.SIGKILL)  # alice never disconnects: her retained presence is the nested one
    # On start the broker reads every retained presence to reset "online" ones to "offline".
    stack = start_stack(url, tmp_path)
    assert stack.stop() == 0, stack.output()
