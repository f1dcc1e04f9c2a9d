"""Starts the brokers the benchmarks compare, each as its own process on a free port, configured alike:
Switchboard's broker, Mosquitto (Debian package) and plain amqtt 0.12.1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningBroker:
    """A broker process; ``async with`` starts it and waits until it accepts connections."""

    name = "broker"
    repo = REPO  # the checkout whose code a Switchboard broker runs (another one compares before/after)

    def __init__(self, *, anonymous: bool = True) -> None:
        self.anonymous = anonymous
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration files before the process starts."""

    async def __aenter__(self) -> RunningBroker:
        self.prepare()
        with open(self.dir / "broker.log", "wb") as log:  # noqa: ASYNC230 (start-up, not a hot path)
            self.process = subprocess.Popen(  # noqa: ASYNC220 (the child keeps its own copy of the log's descriptor)
                self.command(),
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(self.repo), "PYTHONDONTWRITEBYTECODE": "1"},
            )
        for _ in range(600):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.dir / 'broker.log').read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return self
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start listening on {self.port}")

    async def __aexit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Switchboard(RunningBroker):
    name = "switchboard"

    def prepare(self) -> None:
        # bench/chat.py's 50 senders publish as fast as they are acknowledged: a checkout with the per-user rate
        # limit (issue 16) gets one it never reaches; its code runs on every chat message all the same.
        limited = (self.repo / "switchboard/ratelimit.py").exists()
        rate = "publish_rate: 1000000\n  publish_burst: 1000000" if limited else ""
        (self.dir / "bench.yaml").write_text(
            textwrap.dedent(f"""\
            database_url: sqlite:///{self.dir}/bench.db
            log:
              level: WARNING
            mqtt:
              host: 127.0.0.1
              port: {self.port}
              allow_anonymous: {str(self.anonymous).lower()}
              ws_port: null
              metrics_port: null
              state_file: null
              sys_interval: 3600
              max_connections: 100000
            """)
            + (f"  {rate}\n" if rate else "")
        )
        env = {**os.environ, "PYTHONPATH": str(self.repo), "SWITCHBOARD_CONFIG": str(self.dir / "bench.yaml")}
        subprocess.run(
            [sys.executable, "-m", "cli.main", "db", "upgrade"], cwd=self.dir, env=env, check=True, capture_output=True
        )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cli.main", "--config", str(self.dir / "bench.yaml"), "broker"]


class Mosquitto(RunningBroker):
    name = "mosquitto"

    def prepare(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {str(self.anonymous).lower()}",
            "persistence false",
            "max_queued_messages 10000",
            "log_dest none",
            # Without it Mosquitto's small writes wait on Nagle's algorithm and delayed ACKs (40 ms stalls):
            # its figures would be capped by the timer, not by its CPU.
            "set_tcp_nodelay true",
        ]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return ["mosquitto", "-c", str(self.dir / "mosquitto.conf")]


class PlainAmqtt(RunningBroker):
    name = "amqtt"

    def command(self) -> list[str]:
        script = textwrap.dedent(f"""\
            import asyncio, logging
            from amqtt.broker import Broker
            logging.basicConfig(level=logging.WARNING)
            async def main():
                broker = Broker({{
                    "listeners": {{"default": {{"type": "tcp", "bind": "127.0.0.1:{self.port}"}}}},
                    "plugins": {{"amqtt.plugins.authentication.AnonymousAuthPlugin": {{"allow_anonymous": True}}}},
                }})
                await broker.start()
                await asyncio.Event().wait()
            asyncio.run(main())
            """)
        return [sys.executable, "-c", script]


BROKERS: dict[str, Callable[..., RunningBroker]] = {
    "switchboard": Switchboard,
    "mosquitto": Mosquitto,
    "amqtt": PlainAmqtt,
}
