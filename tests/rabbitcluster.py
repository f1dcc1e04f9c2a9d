"""A three-node RabbitMQ cluster on this host for tests: Debian's ``rabbitmq-server`` (3.10) with its MQTT
plugin and the HTTP auth backend pointing at a Switchboard API.

Each node has its own name, ports, data and log directories; they share one Erlang cookie and an ``epmd`` on
a port of their own (``ERL_EPMD_PORT``), and find each other by the ``classic_config`` peer discovery. The
server is run directly as root (``/usr/lib/rabbitmq/bin/rabbitmq-server``): Debian's ``/usr/sbin`` wrapper
switches to the ``rabbitmq`` user, who cannot read the test's directories. The configuration written here
is the one docs/scaling.md describes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

from tests.helpers import PahoClient, free_port, wait_for

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_auth_backend_http")


def installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists() and shutil.which("epmd") is not None


@dataclass
class Node:
    name: str
    mqtt_port: int
    directory: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RabbitCluster:
    """``start`` the nodes, ``stop_node`` one of them, ``close`` them all."""

    workdir: Path
    api: str  # the Switchboard API the nodes ask, e.g. http://127.0.0.1:PORT
    service_user: str
    service_password: str
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        home = self.workdir / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        tag = secrets.token_hex(3)
        self.epmd_port = free_port()
        names = [f"sb{n}-{tag}@localhost" for n in range(1, self.size + 1)]
        for name in names:
            directory = self.workdir / name.split("@")[0]
            directory.mkdir()
            node = Node(name, free_port(), directory, self._env(home, name, directory))
            (directory / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
            (directory / "rabbitmq.conf").write_text(self.config(node, names))
            self.nodes.append(node)

    def _env(self, home: Path, name: str, directory: Path) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": name,
            "RABBITMQ_NODE_PORT": str(free_port()),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
            "RABBITMQ_LOGS": "-",
        }

    def config(self, node: Node, names: list[str]) -> str:
        """rabbitmq.conf of one node: the MQTT plugin on quorum queues, every login and topic asked of the API
        with a service account's HTTP Basic credentials in the URLs' user info."""
        user_info = f"{quote(self.service_user, safe='')}:{quote(self.service_password, safe='')}"
        base = self.api.replace("://", f"://{user_info}@", 1) + "/v1/mqtt/rabbitmq"
        lines = [
            f"mqtt.listeners.tcp.default = {node.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            "mqtt.durable_queue_type = quorum",
            # QoS 1 messages in flight to one client (default 10): the bridge acknowledges a batch once it is
            # committed, so its batches are never larger than this.
            "mqtt.prefetch = 2000",
            "mqtt.tcp_listen_options.nodelay = true",
            "auth_backends.1 = http",
            "auth_http.http_method = post",
            f"auth_http.user_path = {base}/user",
            f"auth_http.vhost_path = {base}/vhost",
            f"auth_http.resource_path = {base}/resource",
            f"auth_http.topic_path = {base}/topic",
            "loopback_users = none",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(f"cluster_formation.classic_config.nodes.{n} = {name}" for n, name in enumerate(names, 1)),
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 120) -> None:
        """Start the nodes one after another, each booted and accepting MQTT logins before the next starts.

        Not all at once: RabbitMQ 3.10's MQTT client-id tracker (the Raft cluster ``mqtt_node``) is formed by each
        node as it boots, from the peers it sees then. Nodes booting together could leave one outside it for
        good: its log said "mqtt_node: leader call - leader not known" and it refused every CONNECT ("client ID
        registration timed out") in 1 of 5 runs here. Started in turn, each joins the tracker the first one
        formed."""
        for node in self.nodes:
            self.start_node(node)
            self.await_node(node, timeout)
            self.await_mqtt(node, timeout)
        wait_for(
            lambda: self.running_nodes() == {n.name for n in self.nodes},
            timeout=timeout,
            interval=1,
            what="the RabbitMQ nodes to form one cluster",
        )

    def start_node(self, node: Node) -> None:
        if node.log is None:
            node.log = (node.directory / "out.log").open("ab")
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=node.env,
            cwd=node.directory,
            stdout=node.log,
            stderr=node.log,
            start_new_session=True,
        )

    def await_node(self, node: Node, timeout: float = 120) -> None:
        wait_for(
            lambda: self._ctl(node, "await_startup", "--timeout", "5").returncode == 0,
            timeout=timeout,
            interval=1,
            what=f"RabbitMQ node {node.name} to start (see {node.directory}/out.log)",
        )

    def await_mqtt(self, node: Node, timeout: float = 120) -> None:
        """Wait until the node accepts an MQTT login (the service account's): a node that has booted may still
        hold CONNECTs until it has joined the cluster's client-id tracker (see :meth:`start`)."""

        def accepted() -> bool:
            probe = PahoClient(
                node.mqtt_port, f"probe-{secrets.token_hex(3)}", self.service_user, self.service_password, clean=True
            )
            try:
                return probe.connect(timeout=10) == "Success"
            except (OSError, AssertionError):  # the port refused, or no CONNACK within 10 s
                return False
            finally:
                probe.close()

        wait_for(
            accepted,
            timeout=timeout,
            interval=1,
            what=f"RabbitMQ node {node.name} to accept an MQTT login (see {node.directory}/out.log)",
        )

    def running_nodes(self) -> set[str]:
        first = next((n for n in self.nodes if n.running), None)
        if first is None:
            return set()
        out = self._ctl(first, "eval", 'io:format("~p", [rabbit_nodes:all_running()]).')
        return {name for name in (n.name for n in self.nodes) if f"'{name}'" in out.stdout}

    def stop_node(self, node: Node) -> None:
        """Kill a node as a crash would (SIGKILL of its Erlang VM): its clients lose their connections."""
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)

    def vm_pids(self) -> list[int]:
        """The processes of the running nodes (the Erlang VMs under each node's start script)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(pid)
        found: list[int] = []
        todo = [n.process.pid for n in self.nodes if n.running and n.process is not None]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def _ctl(self, node: Node, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node.name, *args],
            env=node.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log(self, node: Node) -> str:
        return (node.directory / "out.log").read_text(errors="replace")

    def close(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(timeout=30)
            if node.log is not None:
                node.log.close()
        subprocess.run(
            ["epmd", "-kill"],
            env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
            capture_output=True,
            check=False,
        )
