"""Slow and idle HTTP clients: headers sent a byte at a time, or connections that send nothing, are answered 408
and closed after ``api.header_timeout_seconds``; connections past ``api.max_connections`` get 503 and are
closed; meanwhile the API serves normal requests and the broker in the same process takes MQTT clients."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import stack_users
from tests.helpers import SWITCHBOARD, Service, Stack, mosquitto_pub, start_stack, switchboard_env

HEADER_TIMEOUT = 3


@pytest.fixture(scope="module")
def guarded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = f"sqlite:///{tmp_path_factory.mktemp('slow')}/slow.db"
    running = start_stack(
        url, tmp_path_factory.mktemp("slow-stack"), SWITCHBOARD_API__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT)
    )
    yield running
    assert running.stop() == 0, running.output()


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails when it keeps the socket open past ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_headers_sent_a_byte_at_a_time_are_cut_off(guarded_stack: Stack) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded_stack.api_port), timeout=5) as sock:
        for byte in request:  # 10 bytes a second: the headers would take over 15 minutes
            answered, _, _ = select.select([sock], [], [], 0.1)
            if answered or time.monotonic() - started > 60:
                break  # stop writing once the server has spoken, so its answer is not lost to a reset
            sock.sendall(bytes([byte]))
        answer = _read_all(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"api.header_timeout_seconds" in answer
    assert time.monotonic() - started < 60


def test_a_thousand_idle_connections_are_closed_and_starve_nobody(guarded_stack: Stack) -> None:
    idle = [socket.create_connection(("127.0.0.1", guarded_stack.api_port), timeout=5) for _ in range(1000)]
    try:
        with httpx.Client(base_url=guarded_stack.api, timeout=10, trust_env=False) as http:
            assert http.get("/healthz").status_code == 200
        with stack_users(guarded_stack) as users:
            alice, alice_pw = users.user("alice")
            bob, _ = users.user("bob")
        mosquitto_pub(guarded_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "still here")
        answers = [_read_all(sock, 60) for sock in idle]
    finally:
        for sock in idle:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), {a[:40] for a in answers}


LOW_SOFT_LIMIT = 256


def _low_open_file_limit() -> None:
    """In the child before exec: a soft open-file limit far below the hard one, as on many systems (1024)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc limits")


def test_connections_past_the_cap_are_refused_with_503_and_the_file_limit_is_raised(tmp_path: Path) -> None:
    env = switchboard_env(
        f"sqlite:///{tmp_path}/cap.db",
        SWITCHBOARD_API__MAX_CONNECTIONS="20",
        SWITCHBOARD_API__HEADER_TIMEOUT_SECONDS="600",
    )
    api = Service(
        subprocess.Popen(
            [*SWITCHBOARD, "api"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_low_open_file_limit,
        )
    )
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        soft, hard = _open_file_limits(api.process.pid)
        assert soft == hard > LOW_SOFT_LIMIT, "the soft open-file limit was not raised to the hard one"
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            answer = _read_all(extra, 10)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer, answer
        for sock in idle:
            sock.close()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as http:
            for _ in range(100):  # the server notices the closed sockets at once, but asynchronously
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise AssertionError("the API did not serve again after the idle connections closed")
    finally:
        assert api.stop() == 0, api.output()
