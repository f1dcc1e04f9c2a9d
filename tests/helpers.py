"""Test helpers: run ``switchboard`` processes, and drive ``mosquitto_pub``/``mosquitto_sub`` as real clients."""

from __future__ import annotations

import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from sqlalchemy import Engine, event

SWITCHBOARD = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 60

T = TypeVar("T")


def free_port() -> int:
    """A port the kernel just handed out for port 0 (for a service that must be told its port in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` (or an engine made from it by ``execution_options``) sends while the block
    runs, as sent."""
    sent: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def wait_for(check: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.1, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def switchboard_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment for a switchboard process: no inherited SWITCHBOARD_* settings, ports 0, this database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SWITCHBOARD_DATABASE_URL": database_url,
            "SWITCHBOARD_MQTT__HOST": "127.0.0.1",
            "SWITCHBOARD_MQTT__PORT": "0",
            "SWITCHBOARD_MQTT__WS_PORT": "0",
            "SWITCHBOARD_BRIDGE__METRICS_PORT": "0",
            "SWITCHBOARD_MQTT__METRICS_PORT": "0",
            "SWITCHBOARD_API__METRICS_PORT": "0",
            "SWITCHBOARD_API__HOST": "127.0.0.1",
            "SWITCHBOARD_API__PORT": "0",
        }
    )
    env.update(settings)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``switchboard`` command to completion."""
    return subprocess.run(
        [*SWITCHBOARD, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


class _Lines:
    """Collects a process's output lines in a thread so tests can wait for one without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    def close(self) -> None:
        """After the process has exited: read to the end, then close the pipe."""
        self._thread.join(timeout=10)
        self._stream.close()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))
            try:
                self._new.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                pass


@dataclass
class Service:
    """A running ``switchboard`` process whose output is collected."""

    process: subprocess.Popen[str]
    out: _Lines = field(init=False)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None
        self.out = _Lines(self.process.stdout)

    def output(self) -> str:
        return "\n".join(self.out.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"process did not stop within {timeout}s:\n{self.output()}") from None
        finally:
            self.out.close()


def start_service(*args: str, env: dict[str, str], cwd: Path) -> Service:
    process = subprocess.Popen(
        [*SWITCHBOARD, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Service(process)


@dataclass
class Stack(Service):
    """``switchboard up``: broker, bridge and API in one process."""

    database_url: str = ""
    mqtt_port: int = 0
    ws_port: int = 0
    tls_port: int = 0
    wss_port: int = 0
    api_port: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def http(self, user: str, password: str) -> httpx.Client:
        return httpx.Client(base_url=self.api, auth=(user, password), timeout=10, trust_env=False)


def start_stack(database_url: str, workdir: Path, **settings: str) -> Stack:
    env = switchboard_env(database_url, **settings)
    process = subprocess.Popen(
        [*SWITCHBOARD, "up"], env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stack = Stack(process, database_url=database_url)
    try:
        stack.mqtt_port = int(stack.out.wait_for(r"mqtt listening on [\d.]+:(\d+)", STARTUP_SECONDS).group(1))
        stack.api_port = int(stack.out.wait_for(r"api listening on http://[\d.]+:(\d+)", STARTUP_SECONDS).group(1))
        stack.out.wait_for(r"switchboard: ready", STARTUP_SECONDS)
        for scheme, attribute in (("ws", "ws_port"), ("mqtts", "tls_port"), ("wss", "wss_port")):
            found = [re.search(rf"switchboard: {scheme} listening on [\d.]+:(\d+)", line) for line in stack.out.lines]
            setattr(stack, attribute, next((int(m.group(1)) for m in found if m), 0))
    except AssertionError:
        stack.stop(signal.SIGKILL)
        raise
    return stack


class MosquittoSub:
    """``mosquitto_sub -d -v``: a subscriber nobody here wrote. Lines ``topic payload`` are the messages."""

    def __init__(self, port: int, user: str, password: str, *topics: str, qos: int = 1, extra: tuple[str, ...] = ()):
        # stdbuf: mosquitto_sub buffers its debug lines when writing to a pipe.
        args = [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-u",
            user,
            "-P",
            password,
            "-d",
            "-v",
        ]
        args += ["-q", str(qos), *extra]
        for topic in topics:
            args += ["-t", topic]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        self.out = _Lines(self.process.stdout)
        self._topics = topics

    def granted(self, timeout: float = 20) -> list[int]:
        """The SUBACK's return codes (128 = refused)."""
        match = self.out.wait_for(r"Subscribed \(mid: \d+\): ([\d, ]+)", timeout)
        return [int(code) for code in match.group(1).split(",")]

    def messages(self) -> list[tuple[str, str]]:
        found = []
        for line in self.out.lines:
            if line.startswith(("Client ", "Subscribed ", "All subscription")):
                continue
            topic, _, payload = line.partition(" ")
            found.append((topic, payload))
        return found

    def wait_messages(self, count: int, timeout: float = 20) -> list[tuple[str, str]]:
        return wait_for(
            lambda: len(self.messages()) >= count and self.messages(),
            timeout=timeout,
            what=f"{count} message(s) on {self._topics}",
        )

    def close(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.out.close()
        return "\n".join(self.out.lines)


def run_mosquitto_pub(
    port: int, user: str, password: str, topic: str, message: str | bytes, *, qos: int = 1, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run ``mosquitto_pub`` once (payload from stdin, so any bytes go through); ``extra``: more options."""
    payload = message.encode() if isinstance(message, str) else message
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), *extra, "-u", user, "-P", password, "-t", topic]
    return subprocess.run([*command, "-q", str(qos), "-s"], input=payload, capture_output=True, timeout=30, check=False)


def mosquitto_pub(
    port: int, user: str, password: str, topic: str, message: str | bytes, *, qos: int = 1, extra: tuple[str, ...] = ()
) -> None:
    """Publish one message with ``mosquitto_pub``; fails the test if it cannot."""
    result = run_mosquitto_pub(port, user, password, topic, message, qos=qos, extra=extra)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


class PahoClient:
    """A paho-mqtt client run in its own thread, recording CONNACK and messages (for session tests)."""

    def __init__(self, port: int, client_id: str, user: str | None, password: str | None, *, clean: bool) -> None:
        import paho.mqtt.client as mqtt

        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack: threading.Event = threading.Event()
        self.reason: str = ""
        self.session_present = False
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: self.disconnected.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload, m.qos, bool(m.dup)))

    def _on_connect(self, _client: object, _userdata: object, flags: object, reason: object, _props: object) -> None:
        self.reason = str(reason)
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connack.set()

    def connect(self, timeout: float = 20) -> str:
        """Connect and return the CONNACK's reason ("Success", "Not authorized", ...)."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.connack.wait(timeout), "no CONNACK"
        return self.reason

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        granted: list[int] = []
        done = threading.Event()

        def on_subscribe(_c: object, _u: object, _mid: int, codes: list[object], _p: object) -> None:
            granted.extend(int(getattr(code, "value", code)) for code in codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic, qos)
        assert done.wait(20), "no SUBACK"
        return granted

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def chat_device(stack: Stack, user: tuple[str, str], *topics: str) -> PahoClient:
    """One of ``user``'s devices (name, password) on ``stack``: a connected clean-session paho client subscribed
    at QoS 1 to ``topics``."""
    client = PahoClient(stack.mqtt_port, f"{user[0]}-{secrets.token_hex(3)}", *user, clean=True)
    assert client.connect() == "Success"
    for topic in topics:
        assert client.subscribe(topic) == [1]
    return client


def service_metric(service: Service, name: str) -> float:
    """One sample of a service's Prometheus endpoint (the port it logged), by metric name."""
    port = int(service.out.wait_for(r"metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


def self_signed_cert(directory: Path, name: str = "broker") -> tuple[Path, Path]:
    """A throw-away certificate for localhost and 127.0.0.1 made by ``openssl`` (as docs/operations.md
    tells an operator to); returns (certificate, key) PEM files. The certificate is its own CA file."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class NoReceiveChecks:
    """The receive checks a hub asks its access control for, for a hub without clients (nothing to check)."""

    def receive_needs_check(self, topic: str, *, root_wildcard: bool) -> bool:
        return False

    def may_receive_now(self, principal: object, topic: str) -> bool | None:
        return True

    async def may_receive(self, principal: object, topic: str) -> bool:
        return True
