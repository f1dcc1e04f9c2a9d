"""Chat-load benchmark: Switchboard's broker, Mosquitto and plain amqtt under the same chat workload, in one run.

U users connect with username and password, each subscribed to its inbox ``dm/{me}/+`` and to G groups
(``group/{g}/+``, groups of S members). Fifty of them send, for a fixed time, DMs to random users and
messages to their groups (half each), at QoS 0 or 1, 100-byte JSON payloads carrying the send time. The
load generator runs in several processes (uvloop when installed) and packets are pre-encoded; each sender
keeps a bounded window (10 messages, then waits for the broker's PUBACKs at QoS 1 or a PINGRESP at QoS 0,
which every broker answers in order), so latency is the brokers' and not an ever-growing queue.

Measured per broker, U and QoS: delivered messages per second, publish-to-delivery latency (median, p99,
on CLOCK_MONOTONIC shared by the processes), broker memory per connection (resident set after connecting
minus before, over U), and the time to connect everyone. Prints the ratios Switchboard / Mosquitto and
Switchboard / amqtt, and draws throughput and p99 latency against U to a PNG.

Brokers are configured alike: per-user passwords and the chat ACLs (``dm/%u/+`` to read, ``dm/+/%u`` to
write, own groups only). Switchboard's users log in with API tokens as their MQTT password, the way its
apps do (an argon2 check per connection costs ~60 ms by design); Mosquitto checks its password file;
amqtt its argon2 password file (its only modern format; cheap parameters, ~1 ms a check) with its ACL plugin.

``--idle N`` instead connects N authenticated idle clients, reports connect time and resident memory,
then drops every connection at once and reconnects them all (a reconnect storm).

    uv run --extra bench python bench/chat.py                         # U = 100, 1000, 10000; QoS 0 and 1
    uv run --extra bench python bench/chat.py --users 1000 --qos 1 --brokers switchboard amqtt
    uv run --extra bench python bench/chat.py --idle 10000 --brokers switchboard mosquitto

Raises its own open-file limit (and the brokers inherit it). Run by hand; results go in
docs/performance.md. Needs mosquitto and mosquitto_passwd (Debian packages).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import random
import resource
import secrets
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brokers import Mosquitto, PlainAmqtt, Switchboard
from mqttwire import connect_packet, publish_packet, subscribe_packet

SENDERS = 50
WINDOW = 10
PASSWORD = "bench-password"  # noqa: S105 (a throwaway benchmark password)
BODY = b"x" * 62
PINGREQ = b"\xc0\x00"


def user_name(i: int) -> str:
    return f"u{i:05d}"


def memberships(users: int, groups_per_user: int, group_size: int) -> dict[int, list[str]]:
    """Each of G layers splits the users (shuffled with its own seed) into groups of S."""
    found: dict[int, list[str]] = {i: [] for i in range(users)}
    for layer in range(groups_per_user):
        order = list(range(users))
        random.Random(layer).shuffle(order)
        for position, i in enumerate(order):
            found[i].append(f"g{layer}-{position // group_size}")
    return found


# Brokers configured for the chat workload -------------------------------------------------------------


class ChatSwitchboard(Switchboard):
    """Users, groups and tokens written straight into the broker's SQLite file (one argon2 hash for all)."""

    def __init__(self, groups: dict[int, list[str]]) -> None:
        super().__init__(anonymous=False)
        self.groups = groups
        self.passwords: dict[str, str] = {}

    def prepare(self) -> None:
        super().prepare()
        from switchboard import accounts

        now = datetime.now(UTC).isoformat(sep=" ")
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat(sep=" ")
        password_hash = accounts.hash_password(PASSWORD)
        self.passwords = {user_name(i): "sbt_" + secrets.token_urlsafe(32) for i in self.groups}
        with sqlite3.connect(self.dir / "bench.db") as db:
            db.executemany(
                "INSERT INTO users (name, password_hash, role, disabled, created_at) VALUES (?, ?, 'user', 0, ?)",
                [(name, password_hash, now) for name in self.passwords],
            )
            db.executemany(
                "INSERT INTO api_tokens (token_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)",
                [(hashlib.sha256(t.encode()).hexdigest(), n, now, expires) for n, t in self.passwords.items()],
            )
            names = sorted({g for gs in self.groups.values() for g in gs})
            db.executemany("INSERT INTO groups (name, created_at) VALUES (?, ?)", [(g, now) for g in names])
            db.executemany(
                "INSERT INTO group_members (group_name, user_name) VALUES (?, ?)",
                [(g, user_name(i)) for i, gs in self.groups.items() for g in gs],
            )


class ChatMosquitto(Mosquitto):
    """A password file (hashed by mosquitto_passwd -U) and an ACL file with the chat rules."""

    def __init__(self, groups: dict[int, list[str]]) -> None:
        super().__init__(anonymous=False)
        self.groups = groups
        self.passwords = {user_name(i): PASSWORD for i in groups}

    def prepare(self) -> None:
        super().prepare()
        passwords = self.dir / "passwords"
        passwords.write_text("".join(f"{name}:{PASSWORD}\n" for name in self.passwords))
        subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True)
        acl = ["pattern read dm/%u/+", "pattern write dm/+/%u"]
        for i, gs in self.groups.items():
            acl.append(f"user {user_name(i)}")
            for g in gs:
                acl += [f"topic read group/{g}/+", f"topic write group/{g}/{user_name(i)}"]
        (self.dir / "acl").write_text("\n".join(acl) + "\n")
        with (self.dir / "mosquitto.conf").open("a") as conf:
            conf.write(f"password_file {passwords}\nacl_file {self.dir / 'acl'}\nmax_inflight_messages 20\nuser root\n")


class ChatAmqtt(PlainAmqtt):
    """amqtt's FileAuthPlugin (argon2) and TopicAccessControlListPlugin with the same rules."""

    def __init__(self, groups: dict[int, list[str]]) -> None:
        super().__init__(anonymous=False)
        self.groups = groups
        self.passwords = {user_name(i): PASSWORD for i in groups}

    def command(self) -> list[str]:
        from argon2 import PasswordHasher

        # Cheap argon2 parameters (~1 ms a check, the cost of Mosquitto's PBKDF2 and Switchboard's token hash):
        # with the defaults amqtt logs in ~8 users a second and the run measures the hash, not the broker.
        password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
        (self.dir / "passwords").write_text("".join(f"{n}:{password_hash}\n" for n in self.passwords))
        subscribe = {
            user_name(i): [f"dm/{user_name(i)}/+"] + [f"group/{g}/+" for g in gs] for i, gs in self.groups.items()
        }
        publish = {
            user_name(i): [f"dm/+/{user_name(i)}"] + [f"group/{g}/{user_name(i)}" for g in gs]
            for i, gs in self.groups.items()
        }
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.dir / "passwords")},
                "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
                    "publish_acl": publish,
                    "acl": subscribe,  # amqtt 0.12.1 calls the subscribe list "acl" in its Config
                },
            },
        }
        (self.dir / "config.py").write_text(f"CONFIG = {config!r}\n")
        script = textwrap.dedent(f"""\
            import asyncio, logging, sys
            sys.path.insert(0, {str(self.dir)!r})
            from config import CONFIG
            from amqtt.broker import Broker
            logging.basicConfig(level=logging.WARNING)
            async def main():
                broker = Broker(CONFIG)
                await broker.start()
                await asyncio.Event().wait()
            asyncio.run(main())
            """)
        return [sys.executable, "-c", script]


CHAT_BROKERS = {"switchboard": ChatSwitchboard, "mosquitto": ChatMosquitto, "amqtt": ChatAmqtt}


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# The load generator ----------------------------------------------------------------------------------


class ChatClient(asyncio.Protocol):
    """One user's connection: parses what the broker sends, acknowledges QoS 1, records latencies."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: asyncio.Future[None] | None = None
        self.expected = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError("connection lost"))

    def expect(self, count: int) -> asyncio.Future[None]:
        """A future done after ``count`` more CONNACK/SUBACK/PUBACK/PINGRESP packets."""
        self.expected = count
        self.waiting = asyncio.get_running_loop().create_future()
        return self.waiting

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset, size = 0, len(buffer)
        worker = self.worker
        while size - offset >= 2:
            index, multiplier, length = offset + 1, 1, 0
            while index < size:
                byte = buffer[index]
                index += 1
                length += (byte & 0x7F) * multiplier
                if not byte & 0x80:
                    break
                multiplier *= 128
            else:
                break
            if index + length > size:
                break
            kind, flags = buffer[offset] >> 4, buffer[offset] & 0x0F
            if kind == 3:
                topic_length = (buffer[index] << 8) | buffer[index + 1]
                start = index + 2 + topic_length
                qos = (flags >> 1) & 3
                if qos:
                    assert self.transport is not None
                    self.transport.write(b"\x40\x02" + bytes(buffer[start : start + 2]))
                    start += 2
                worker.delivered(int(buffer[start + 6 : start + 26]))
            elif kind in (2, 4, 9, 13):
                if kind == 2 and buffer[index + 1] != 0:
                    worker.refused += 1
                self.expected -= 1
                if self.expected == 0 and self.waiting is not None and not self.waiting.done():
                    self.waiting.set_result(None)
            offset = index + length
        del buffer[:offset]


@dataclass
class Worker:
    """One load-generator process: its share of the users, and what they received."""

    port: int
    users: list[int]
    passwords: dict[str, str]
    groups: dict[int, list[str]]
    total_users: int
    qos: int
    senders: set[int]
    window_start: int = 0
    window_end: int = 0
    count: int = 0
    latencies: list[int] = field(default_factory=list)
    refused: int = 0
    clients: dict[int, ChatClient] = field(default_factory=dict)

    def delivered(self, sent_at: int) -> None:
        now = time.monotonic_ns()
        if self.window_start <= now <= self.window_end:
            self.count += 1
            if self.count % 4 == 1:  # a quarter of them is plenty for the percentiles
                self.latencies.append(now - sent_at)

    async def connect(self, i: int, *, subscribe: bool) -> None:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: ChatClient(self), "127.0.0.1", self.port)
        name = user_name(i)
        assert client.transport is not None
        done = client.expect(1)
        client.transport.write(connect_packet(f"c-{name}", name, self.passwords[name]))
        await done
        if subscribe:
            filters = [f"dm/{name}/+"] + [f"group/{g}/+" for g in self.groups[i]]
            done = client.expect(len(filters))
            client.transport.write(
                b"".join(subscribe_packet(f, self.qos, packet_id=n + 1) for n, f in enumerate(filters))
            )
            await done
        self.clients[i] = client

    async def connect_all(self, *, subscribe: bool) -> None:
        limit = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with limit:
                for attempt in range(20):
                    try:
                        await self.connect(i, subscribe=subscribe)
                        return
                    except (ConnectionError, OSError):
                        await asyncio.sleep(0.1 * (attempt + 1))
                raise RuntimeError(f"user {i} could not connect")

        await asyncio.gather(*(one(i) for i in self.users))

    async def send(self, i: int, until: int) -> None:
        client, name, rng = self.clients[i], user_name(i), random.Random(i)
        assert client.transport is not None
        packet_id = 0
        while time.monotonic_ns() < until:
            batch = []
            for n in range(WINDOW):
                if n % 2:
                    topic = f"group/{rng.choice(self.groups[i])}/{name}"
                else:
                    topic = f"dm/{user_name(rng.randrange(self.total_users))}/{name}"
                packet_id = packet_id % 65535 + 1
                payload = b'{"t":"%020d","id":"%d","body":"%s"}' % (time.monotonic_ns(), packet_id, BODY)
                batch.append(publish_packet(topic, payload, qos=self.qos, packet_id=packet_id))
            done = client.expect(WINDOW if self.qos else 1)
            client.transport.write(b"".join(batch) + (b"" if self.qos else PINGREQ))
            await done

    async def run(self, ready: Any, go: Any, results: Any, start_at: Any, duration: float, warmup: float) -> None:
        started = time.monotonic()
        await self.connect_all(subscribe=True)
        ready.put((len(self.users), time.monotonic() - started, self.refused))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        begin = start_at.value
        self.window_start = begin + int(warmup * 1e9)
        self.window_end = begin + int((warmup + duration) * 1e9)
        await asyncio.gather(*(self.send(i, self.window_end) for i in self.users if i in self.senders))
        await asyncio.sleep(1.0)  # deliveries still on the way when the window closed
        results.put((self.count, self.latencies))
        for client in self.clients.values():
            if client.transport is not None:
                client.transport.close()


def worker_main(
    worker: Worker, ready: Any, go: Any, results: Any, start_at: Any, duration: float, warmup: float
) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    try:
        import uvloop

        uvloop.run(worker.run(ready, go, results, start_at, duration, warmup))
    except ImportError:
        asyncio.run(worker.run(ready, go, results, start_at, duration, warmup))


@dataclass
class Result:
    broker: str
    users: int
    qos: int
    rate: float
    median_ms: float
    p99_ms: float
    bytes_per_connection: float
    connect_seconds: float


async def chat_run(
    name: str, users: int, qos: int, groups: dict[int, list[str]], processes: int, duration: float
) -> Result:
    broker_factory = CHAT_BROKERS[name]
    async with broker_factory(groups) as broker:
        assert broker.process is not None
        before = resident_bytes(broker.process.pid)
        senders = set(random.Random(99).sample(range(users), min(SENDERS, users)))
        context = multiprocessing.get_context("spawn")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        start_at = context.Value("q", 0)
        passwords: dict[str, str] = broker.passwords  # type: ignore[attr-defined]
        children = []
        for w in range(processes):
            mine = list(range(w, users, processes))
            worker = Worker(broker.port, mine, passwords, {i: groups[i] for i in mine}, users, qos, senders)
            child = context.Process(target=worker_main, args=(worker, ready, go, results, start_at, duration, 1.0))
            child.start()
            children.append(child)
        started = time.monotonic()
        reports = [await asyncio.to_thread(ready.get, True, 1800) for _ in children]
        connect_seconds = time.monotonic() - started
        if sum(r[2] for r in reports):
            raise RuntimeError(f"{name}: {sum(r[2] for r in reports)} connections refused")
        await asyncio.sleep(1)
        after = resident_bytes(broker.process.pid)
        start_at.value = time.monotonic_ns()
        go.set()
        outcomes = [await asyncio.to_thread(results.get, True, duration + 600) for _ in children]
        for child in children:
            child.join(timeout=30)
    delivered = sum(o[0] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o[1])
    if not latencies:
        raise RuntimeError(f"{name}: nothing was delivered")
    return Result(
        name,
        users,
        qos,
        delivered / duration,
        statistics.median(latencies) / 1e6,
        latencies[int(len(latencies) * 0.99)] / 1e6,
        (after - before) / users,
        connect_seconds,
    )


# Idle connections and a reconnect storm ---------------------------------------------------------------


async def idle_run(name: str, users: int, processes: int) -> None:
    groups = {i: [] for i in range(users)}
    async with CHAT_BROKERS[name](groups) as broker:
        assert broker.process is not None
        before = resident_bytes(broker.process.pid)
        passwords: dict[str, str] = broker.passwords  # type: ignore[attr-defined]
        worker = Worker(broker.port, list(range(users)), passwords, groups, users, 0, set())
        started = time.monotonic()
        await worker.connect_all(subscribe=False)
        connected = time.monotonic() - started
        await asyncio.sleep(2)
        after = resident_bytes(broker.process.pid)
        for client in worker.clients.values():
            assert client.transport is not None
            client.transport.abort()  # every connection drops at once, as in a network blip
        await asyncio.gather(*(c.lost for c in worker.clients.values()))
        worker.clients.clear()
        started = time.monotonic()
        await worker.connect_all(subscribe=False)
        reconnected = time.monotonic() - started
        total = resident_bytes(broker.process.pid)
        for client in worker.clients.values():
            assert client.transport is not None
            client.transport.close()
    print(
        f"{name:<12} {users:>6} idle: connected in {connected:6.1f}s ({users / connected:6.0f}/s), "
        f"resident {total / 2**20:6.1f} MB ({(after - before) / users / 1024:5.1f} KB per connection), "
        f"reconnect storm {reconnected:6.1f}s ({users / reconnected:6.0f}/s)",
        flush=True,
    )


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (broker, qos), style in zip(
        sorted({(r.broker, r.qos) for r in results}), ["-o", "--o", "-s", "--s", "-^", "--^"], strict=False
    ):
        rows = sorted((r for r in results if (r.broker, r.qos) == (broker, qos)), key=lambda r: r.users)
        label = f"{broker} QoS {qos}"
        left.plot([r.users for r in rows], [r.rate for r in rows], style, label=label)
        right.plot([r.users for r in rows], [r.p99_ms for r in rows], style, label=label)
    for axis, title in ((left, "delivered messages per second"), (right, "p99 publish-to-delivery latency (ms)")):
        axis.set_xscale("log")
        axis.set_xlabel("users connected (U)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--qos", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--brokers", nargs="+", default=list(CHAT_BROKERS), choices=list(CHAT_BROKERS))
    parser.add_argument("--groups", type=int, default=2, help="groups per user (G)")
    parser.add_argument("--group-size", type=int, default=10, help="members per group (S)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending per run")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--chart", type=Path, default=Path("docs/chat-bench.png"))
    parser.add_argument(
        "--amqtt-max-users",
        type=int,
        default=1000,
        help="skip amqtt above this U (it matches every message against every filter: minutes at 10,000)",
    )
    parser.add_argument("--idle", type=int, help="instead: N idle connections and a reconnect storm")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.idle:
        for name in args.brokers:
            asyncio.run(idle_run(name, args.idle, args.processes))
        return
    results = []
    print(f"G={args.groups} groups of {args.group_size} per user, {SENDERS} senders, {args.duration:.0f}s per run")
    print(f"{'broker':<12} {'U':>6} {'QoS':>3} {'msg/s':>9} {'median':>9} {'p99':>9} {'KB/conn':>8} {'connect':>8}")
    for users in args.users:
        groups = memberships(users, args.groups, args.group_size)
        for qos in args.qos:
            for name in args.brokers:
                if name == "amqtt" and users > args.amqtt_max_users:
                    continue
                r = asyncio.run(chat_run(name, users, qos, groups, args.processes, args.duration))
                results.append(r)
                print(
                    f"{r.broker:<12} {r.users:>6} {r.qos:>3} {r.rate:>9.0f} {r.median_ms:>7.1f}ms {r.p99_ms:>7.1f}ms "
                    f"{r.bytes_per_connection / 1024:>8.1f} {r.connect_seconds:>7.1f}s",
                    flush=True,
                )
    print()
    for users in args.users:
        for qos in args.qos:
            by = {r.broker: r for r in results if (r.users, r.qos) == (users, qos)}
            if "switchboard" not in by:
                continue
            sb = by["switchboard"]
            for other in ("mosquitto", "amqtt"):
                if other in by:
                    print(
                        f"U={users:<6} QoS {qos}: switchboard / {other}: throughput {sb.rate / by[other].rate:5.2f}, "
                        f"p99 latency {sb.p99_ms / by[other].p99_ms:5.2f}"
                    )
    sb_rows = {(r.users, r.qos): r for r in results if r.broker == "switchboard"}
    for qos in args.qos:
        low, high = sb_rows.get((min(args.users), qos)), sb_rows.get((max(args.users), qos))
        if low and high and low is not high:
            print(f"switchboard QoS {qos}: throughput at U={high.users} / U={low.users} = {high.rate / low.rate:.2f}")
    chart(results, args.chart)
    print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
