"""Throughput benchmark of issue 14: Switchboard's broker, Mosquitto and plain amqtt, one after another in one run,
loaded by a compiled generator (bench/loadgen.c, C with epoll, built here with the system ``cc -O2``).

Workloads (each broker gets the same one, back to back):

- ``dm``: U users, each subscribed at QoS 1 to its own inbox (``inbox/{user}``, anonymous); random users send
  QoS 1 DMs to random other users, W deliveries outstanding in total (200), every delivery PUBACKed.
- ``chat``: bench/chat.py's set-up (passwords or API tokens, ACLs, ``dm/{me}/+`` and 2 groups of 10 per user);
  half the messages are DMs ``dm/{to}/{me}``, half go to one of the sender's groups ``group/{g}/{me}``.
- ``idle``: U authenticated users connect and subscribe to their inbox (time to the last SUBACK), are held
  (broker resident memory), then all dropped at once (RST) and reconnected and resubscribed (reconnect storm).

``--protocols 4 5`` runs each workload with MQTT 3.1.1 and then MQTT 5 clients (the same generator speaking
protocol level 5, reported as "{broker} v5"), each broker with both back to back in the same run, and closes with
the MQTT 5 / 3.1.1 ratios. Plain amqtt has no MQTT 5 and is skipped for it.

Measured over a window after a warm-up: delivered msg/s, the broker's CPU (utime + stime of its process tree
from /proc) in microseconds per delivered message, the generator's own CPU share of one core (it must stay
well below 1: above 0.6 the run says so; ``--shards 2`` splits it into two processes), the broker's resident
memory, publish-to-delivery latency (p50/p99). Ratios Switchboard / Mosquitto close the run.

    uv run python bench/throughput.py                         # the issue 14 set, < 10 minutes
    uv run python bench/throughput.py --runs dm:1000 chat:1000 --brokers switchboard mosquitto
    uv run python bench/throughput.py --runs idle:10000 --json /tmp/idle.json
    uv run python bench/throughput.py --runs chat:1000 --brokers switchboard mosquitto --protocols 4 5

Needs cc, mosquitto and mosquitto_passwd (Debian packages). Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brokers import BROKERS, RunningBroker
from chat import CHAT_BROKERS, memberships, resident_bytes, user_name

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
DEFAULT_RUNS = ["dm:100", "dm:1000", "dm:10000", "chat:1000", "idle:10000"]
TICKS = os.sysconf("SC_CLK_TCK")


def build_loadgen(directory: Path, source: Path = SOURCE) -> Path:
    """Compile ``source`` (bench/loadgen.c unless told) with the system C compiler; the binary, named after it,
    lives in ``directory``."""
    binary = directory / source.stem
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def tree_cpu_seconds(root: int, *, system_only: bool = False) -> float:
    """utime + stime of ``root`` and every live descendant (and of children it has waited for); ``system_only``:
    stime alone (the kernel's share: system calls, the loopback TCP stack)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        wanted = fields[12:15:2] if system_only else fields[11:15]  # utime stime cutime cstime
        times[pid] = sum(int(x) for x in wanted) / TICKS
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


@dataclass
class Row:
    workload: str
    broker: str
    users: int
    rate: float = 0.0
    broker_us_per_msg: float = 0.0
    broker_system_us_per_msg: float = 0.0  # the kernel's share of it (stime)
    broker_cores: float = 0.0
    generator_cores: float = 0.0  # all generator processes together
    generator_processes: int = 1
    rss_mb: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    connect_s: float = 0.0
    storm_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def shard_groups(users: int, shards: int, groups_per_user: int, group_size: int) -> dict[int, list[str]]:
    """chat.py's memberships, drawn inside each generator shard (so every delivery returns to its sender's shard)."""
    found: dict[int, list[str]] = {}
    for shard in range(shards):
        mine = list(range(shard, users, shards))
        drawn = memberships(len(mine), groups_per_user, group_size)
        for position, i in enumerate(mine):
            found[i] = [f"s{shard}{g}" for g in drawn[position]] if shards > 1 else drawn[position]
    return found


class Generators:
    """The load-generator processes of one run, one per shard, each with its own users file."""

    def __init__(
        self, binary: Path, workdir: Path, broker: RunningBroker, mode: str, scheme: str, protocol: int = 4
    ) -> None:
        self.binary, self.workdir, self.broker, self.mode, self.scheme = binary, workdir, broker, mode, scheme
        self.protocol = protocol
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, users: list[list[tuple[str, str, list[str]]]], window: int, pending: int) -> None:
        for shard, rows in enumerate(users):
            path = self.workdir / f"users-{self.broker.name}-{shard}.tsv"
            path.write_text("".join(f"{n}\t{p}\t{','.join(g) or '-'}\n" for n, p, g in rows))
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    str(self.binary),
                    *("--port", str(self.broker.port), "--users", str(path), "--mode", self.mode),
                    *("--scheme", self.scheme, "--window", str(max(1, window // len(users)))),
                    *("--pending", str(max(1, pending // len(users))), "--seed", str(shard + 1)),
                    *("--protocol", str(self.protocol)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )

    async def lines(self, tag: str, seconds: float) -> list[dict[str, float]]:
        """The JSON of each generator's next line, which must start with ``tag``."""
        found = []
        for process in self.processes:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), seconds)).decode()
            if not line.startswith(tag):
                await process.wait()
                raise RuntimeError(f"{self.broker.name}: load generator said {line!r} (exit {process.returncode})")
            found.append(json.loads(line.split(" ", 1)[1]))
        return found

    def tell(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command.encode() + b"\n")

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(p.pid) for p in self.processes)

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                assert process.stdin is not None
                process.stdin.close()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()


def user_rows(
    broker: RunningBroker, users: int, groups: dict[int, list[str]], shards: int
) -> list[list[tuple[str, str, list[str]]]]:
    passwords: dict[str, str] = getattr(broker, "passwords", {})
    rows = [(user_name(i), passwords.get(user_name(i), "-"), groups.get(i, [])) for i in range(users)]
    return [rows[shard::shards] for shard in range(shards)]


VARIANTS: dict[str, Path] = {}  # name -> another checkout of Switchboard, run as one more broker (--variant)


def make_broker(workload: str, name: str, groups: dict[int, list[str]]) -> RunningBroker:
    factory: type[RunningBroker] = (BROKERS if workload == "dm" else CHAT_BROKERS)[
        "switchboard" if name in VARIANTS else name
    ]
    if name in VARIANTS:
        factory = type(f"{name}-{factory.__name__}", (factory,), {"name": name, "repo": VARIANTS[name]})
    return factory(anonymous=True) if workload == "dm" else factory(groups)


def labelled(name: str, protocol: int) -> str:
    """A broker's name in the results: "switchboard", or "switchboard v5" for its run with MQTT 5 clients."""
    return name if protocol == 4 else f"{name} v5"


async def load_run(
    args: argparse.Namespace, binary: Path, workdir: Path, workload: str, name: str, users: int, protocol: int = 4
) -> Row:
    groups = shard_groups(users, args.shards, 2, 10) if workload == "chat" else {}
    async with make_broker(workload, name, groups) as broker:
        assert broker.process is not None
        scheme = "chat" if workload == "chat" else "inbox"
        generators = Generators(binary, workdir, broker, "dm", scheme, protocol)
        try:
            await generators.start(user_rows(broker, users, groups, args.shards), args.window, args.pending)
            ready = await generators.lines("READY", args.connect_timeout)
            start = time.monotonic_ns() + int(args.warmup * 1e9)
            end = start + int(args.duration * 1e9)
            generators.tell(f"GO {start} {end}")
            await asyncio.sleep((start - time.monotonic_ns()) / 1e9)
            broker_cpu, generator_cpu = tree_cpu_seconds(broker.process.pid), generators.cpu_seconds()
            broker_sys = tree_cpu_seconds(broker.process.pid, system_only=True)
            profiler = await start_profiler(
                args, broker, f"{workload}-{labelled(name, protocol).replace(' ', '-')}-{users}"
            )
            await asyncio.sleep((end - time.monotonic_ns()) / 1e9)
            if profiler is not None:
                await profiler.wait()
            broker_cpu = tree_cpu_seconds(broker.process.pid) - broker_cpu
            broker_sys = tree_cpu_seconds(broker.process.pid, system_only=True) - broker_sys
            generator_cpu = generators.cpu_seconds() - generator_cpu
            rss = resident_bytes(broker.process.pid)
            results = await generators.lines("RESULT", 60)
        finally:
            await generators.close()
    delivered = sum(r["delivered"] for r in results)
    seconds = args.duration
    return Row(
        workload,
        labelled(name, protocol),
        users,
        rate=delivered / seconds,
        broker_us_per_msg=broker_cpu / delivered * 1e6 if delivered else 0.0,
        broker_cores=broker_cpu / seconds,
        generator_cores=generator_cpu / seconds,
        generator_processes=args.shards,
        rss_mb=rss / 2**20,
        p50_ms=max(r["p50_ms"] for r in results),
        p99_ms=max(r["p99_ms"] for r in results),
        connect_s=max(r["suback_s"] for r in ready),
        broker_system_us_per_msg=broker_sys / delivered * 1e6 if delivered else 0.0,
        extra={k: sum(r[k] for r in results) for k in ("lost", "duplicates", "disconnects")},
    )


async def start_profiler(
    args: argparse.Namespace, broker: RunningBroker, tag: str
) -> asyncio.subprocess.Process | None:
    """py-spy over the measured window (``--profile DIR``, Switchboard's brokers only), raw collapsed stacks
    in ``DIR/{tag}.txt``; its sampling costs the broker a little CPU, so profile in runs of their own."""
    if args.profile is None or broker.name in ("mosquitto", "amqtt") or broker.process is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        *("py-spy", "record", "--pid", str(broker.process.pid), "--rate", "200", "--nonblocking", "--subprocesses"),
        *("--duration", str(int(args.duration)), "--format", "raw", "-o", str(args.profile / f"{tag}.txt")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def idle_run(args: argparse.Namespace, binary: Path, workdir: Path, name: str, users: int) -> Row:
    groups: dict[int, list[str]] = {i: [] for i in range(users)}
    async with make_broker("idle", name, groups) as broker:
        assert broker.process is not None
        before, cpu = resident_bytes(broker.process.pid), tree_cpu_seconds(broker.process.pid)
        generators = Generators(binary, workdir, broker, "idle", "chat")
        try:
            await generators.start(user_rows(broker, users, groups, args.shards), 1, args.pending)
            ready = await generators.lines("READY", args.connect_timeout)
            connect_cpu = tree_cpu_seconds(broker.process.pid) - cpu
            await asyncio.sleep(2)
            held, cpu = resident_bytes(broker.process.pid), tree_cpu_seconds(broker.process.pid)
            generators.tell("STORM")
            storm = await generators.lines("RESULT", args.connect_timeout)
            storm_cpu = tree_cpu_seconds(broker.process.pid) - cpu
        finally:
            await generators.close()
    return Row(
        "idle",
        name,
        users,
        rss_mb=held / 2**20,
        connect_s=max(r["suback_s"] for r in ready),
        storm_s=max(r["suback_s"] for r in storm),
        extra={
            "kb_per_connection": (held - before) / users / 1024,
            "connack_s": max(r["connack_s"] for r in ready),
            "storm_connack_s": max(r["connack_s"] for r in storm),
            "retries": sum(r["retries"] for r in ready + storm),
            "connect_cpu_ms_per_connection": connect_cpu / users * 1e3,
            "storm_cpu_ms_per_connection": storm_cpu / users * 1e3,
        },
    )


def show(row: Row) -> None:
    if row.workload == "idle":
        print(
            f"{row.workload:<5} {row.broker:<12} U={row.users:<6} connect+subscribe {row.connect_s:6.2f}s "
            f"(CONNACKs {row.extra['connack_s']:.2f}s)  RSS {row.rss_mb:6.1f} MB "
            f"({row.extra['kb_per_connection']:.1f} KB/conn)  reconnect storm {row.storm_s:6.2f}s  broker CPU per "
            f"connection {row.extra['connect_cpu_ms_per_connection']:.2f} ms, in the storm "
            f"{row.extra['storm_cpu_ms_per_connection']:.2f} ms",
            flush=True,
        )
        return
    busiest = row.generator_cores / row.generator_processes
    warn = (
        f"  <- a generator process above 0.6 of a core: use --shards {row.generator_processes + 1}"
        if busiest > 0.6
        else ""
    )
    print(
        f"{row.workload:<5} {row.broker:<12} U={row.users:<6} {row.rate:9.0f} msg/s  "
        f"broker {row.broker_us_per_msg:6.1f} us/msg ({row.broker_system_us_per_msg:.1f} system, "
        f"{row.broker_cores:.2f} cores)  "
        f"generator {row.generator_cores:.2f} cores  RSS {row.rss_mb:6.1f} MB  "
        f"p50 {row.p50_ms:.1f} ms p99 {row.p99_ms:.1f} ms  {row.extra}{warn}",
        flush=True,
    )


def ratios(rows: list[Row]) -> None:
    by = {(r.workload, r.broker, r.users): r for r in rows}
    print("\nAgainst Mosquitto (same run):")
    for (workload, broker, users), sb in sorted(by.items()):
        mq = by.get((workload, "mosquitto v5" if broker.endswith(" v5") else "mosquitto", users))
        if broker.split(" ")[0] in ("mosquitto", "amqtt") or mq is None:
            continue
        if workload == "idle":
            print(
                f"  {broker} idle U={users}: RSS {sb.rss_mb:.0f} / {mq.rss_mb:.0f} MB, connect+subscribe "
                f"{sb.connect_s / mq.connect_s:.2f}x, reconnect storm {sb.storm_s / mq.storm_s:.2f}x"
            )
        else:
            print(
                f"  {broker} {workload} U={users}: msg/s {sb.rate / mq.rate:.2f}x, CPU per message "
                f"{sb.broker_us_per_msg / mq.broker_us_per_msg:.2f}x"
            )
    versions = [(key, row, by.get((key[0], key[1].removesuffix(" v5"), key[2]))) for key, row in sorted(by.items())]
    for (workload, broker, users), v5, v4 in versions:
        if broker.endswith(" v5") and v4 is not None and workload != "idle":
            print(
                f"  MQTT 5 / 3.1.1, {broker.removesuffix(' v5')} {workload} U={users}: msg/s {v5.rate / v4.rate:.2f}x, "
                f"CPU per message {v5.broker_us_per_msg / v4.broker_us_per_msg:.2f}x, p99 {v5.p99_ms / v4.p99_ms:.2f}x"
            )
    for broker in sorted({r.broker for r in rows}):
        low, high = by.get(("dm", broker, 100)), by.get(("dm", broker, 10000))
        if low and high:
            print(f"  {broker}: msg/s at U=10000 / U=100 = {high.rate / low.rate:.2f}")


def markdown(rows: list[Row]) -> None:
    """The run as one table, a column per broker (for docs/performance.md)."""
    brokers = list(dict.fromkeys(r.broker for r in rows))
    by = {(r.workload, r.users, r.broker): r for r in rows}
    print("\n| workload | " + " | ".join(brokers) + " |\n|---" * 1 + "|---" * len(brokers) + "|")
    for workload, users in dict.fromkeys((r.workload, r.users) for r in rows):
        cells = []
        for broker in brokers:
            r = by.get((workload, users, broker))
            if r is None:
                cells.append("-")
            elif workload == "idle":
                cells.append(f"{r.connect_s:.1f} s, storm {r.storm_s:.1f} s, {r.rss_mb:.0f} MB")
            else:
                cells.append(f"{r.rate:,.0f} msg/s, {r.broker_us_per_msg:,.0f} µs, {r.rss_mb:.0f} MB")
        print(f"| {workload} U = {users:,} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="workload:U, workload in dm, chat, idle")
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=list(BROKERS))
    parser.add_argument("--window", type=int, default=200, help="deliveries outstanding in total (W)")
    parser.add_argument(
        "--pending",
        type=int,
        default=100,
        help="connection handshakes in progress at once (Mosquitto listens with a backlog of 100: "
        "more would wait on 1 s SYN retries)",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--shards", type=int, default=1, help="load-generator processes")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--amqtt-max-users", type=int, default=1000, help="skip plain amqtt above this U")
    parser.add_argument("--json", type=Path, help="append the rows to this JSON-lines file")
    parser.add_argument(
        "--protocols",
        nargs="+",
        type=int,
        default=[4],
        choices=[4, 5],
        help="MQTT protocol levels the clients speak: 4 (3.1.1), 5 (MQTT 5, shown as '{broker} v5')",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy each Switchboard broker over the window into DIR"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run Switchboard's broker from another checkout (e.g. `git archive main | tar -x -C DIR`), "
        "named NAME, in the same run: before/after figures under the same load",
    )
    args = parser.parse_args()
    for variant in args.variant:
        name, _, directory = variant.partition("=")
        if not (Path(directory) / "broker").is_dir() or name in BROKERS:
            raise SystemExit(f"--variant {variant}: expected NAME=DIR, DIR a Switchboard checkout, NAME not a broker")
        VARIANTS[name] = Path(directory).resolve()
    brokers = [*VARIANTS, *args.brokers]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the brokers and generators inherit it
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        binary = build_loadgen(Path(tmp))
        for spec in args.runs:
            workload, users_text = spec.split(":")
            users = int(users_text)
            if users + 64 > hard:
                raise SystemExit(
                    f"{spec}: {users} connections need more than the {hard} open files allowed (ulimit -Hn)"
                )
            for name, protocol in [(name, protocol) for name in brokers for protocol in args.protocols]:
                if name == "amqtt" and (users > args.amqtt_max_users or workload == "idle" or protocol == 5):
                    continue  # ~8 argon2 logins/s, ~100 anonymous connections/s: minutes of waiting; no MQTT 5
                if workload == "idle" and protocol == 5:
                    continue
                try:
                    if workload == "idle":
                        row = asyncio.run(idle_run(args, binary, Path(tmp), name, users))
                    else:
                        row = asyncio.run(load_run(args, binary, Path(tmp), workload, name, users, protocol))
                except (RuntimeError, TimeoutError, OSError) as exc:
                    print(f"{workload:<5} {labelled(name, protocol):<15} U={users:<6} failed: {exc!r}", flush=True)
                    continue
                show(row)
                rows.append(row)
                if args.json:
                    with args.json.open("a") as out:
                        out.write(json.dumps(asdict(row)) + "\n")
    ratios(rows)
    markdown(rows)


if __name__ == "__main__":
    main()
