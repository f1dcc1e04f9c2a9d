"""The sync storm of issue 18: every phone comes back at once, syncs from its cursor and pages its history.

Loads Postgres with 60 users and 12,000 DMs (each user in 10 DM conversations of 40 messages, stream
positions interleaved across conversations as live traffic leaves them), starts one ``switchboard api``
process (or ``--workers N``), and plays the storm with C concurrent clients (bearer tokens, keep-alive
connections): each client takes the next user and, as its phone would, calls ``GET /v1/sync`` from the
user's cursor (6,000 positions back: about 200 of its messages, so 2-3 pages of limit 100, following
``next`` while ``more``), then pages each of its conversations' history (the newest page and the one
before it, limit 50). One round (every user once) warms up; the next ``--rounds`` are measured.

The warm-up round is played by a Python client (httpx), which records every phone's requests as it sends them:
the sync pages it got by following ``next`` and the history pages by following ``before``. The measured rounds
replay exactly those requests (the database does not change during the run, so they are the same pages) with
bench/httpload.c, a C generator (epoll, HTTP/1.1 keep-alive, one connection per concurrent phone, the request
bytes built once), compiled here with ``cc -O2``: the Python client spends more CPU per request than the API
(2.4-2.8 ms against 1.3) and would be the ceiling and put its own scheduling delays into the p99.
``--client python`` measures with the Python client instead, for comparison.

Prints requests per second, median and p99 latency (as the client sees them), the CPU the API's processes
spent per request (user + system time of the server process and its worker children, from psutil, i.e.
/proc/<pid>/stat; the client's own CPU is not counted) and the client's CPU per request and its share of one
core. It also prints the API's own answer times, from the API's request histogram (api/metrics.py, scraped
before and after the measured rounds): the share answered within 50 ms and the bucket bound under which 99% were.

    uv run python bench/api_storm.py [--rounds 3] [--concurrency 16] [--workers 1] [--py-spy out.txt]
    uv run python bench/api_storm.py --client python   # the old Python client, for comparison
    uv run python bench/api_storm.py --before /tmp/before --pairs 3   # old code and this, alternating

``--before DIR`` runs the API from another source tree too (``git archive COMMIT | tar -x -C DIR``), the
two alternating ``--pairs`` times on the same database, so "before" and "after" share the machine's load.

``--py-spy FILE`` records the server with py-spy during the measured rounds (``--format raw``: collapsed
stacks, one per line with its sample count) and prints the functions with the most samples.

Needs cc (to build bench/httpload.c) and a Postgres reachable as ``BENCH_PG_ADMIN_DSN`` (default: the local
cluster's socket, as the current user, as scripts/test sets it up). Run by hand; results go in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.brokers import free_port  # noqa: E402
from bench.database import BenchDatabase, settle  # noqa: E402
from bench.throughput import build_loadgen  # noqa: E402
from switchboard import accounts  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402

USERS = 60
PEERS = 5  # each user DMs the next 5 (and is DMed by the previous 5): 10 conversations each, 300 in all
PER_CONVERSATION = 40  # 300 x 40 = 12,000 messages
BEHIND = 6_000  # how many stream positions each phone missed
#: The metrics port of each API process start_api started, by pid.
METRICS_PORTS: dict[int, int] = {}
HTTPLOAD = REPO / "bench" / "httpload.c"


def users() -> list[str]:
    return [f"u{i:02d}" for i in range(USERS)]


def conversation_pairs() -> list[tuple[str, str]]:
    names = users()
    pairs = {tuple(sorted((names[i], names[(i + k) % USERS]))) for i in range(USERS) for k in range(1, PEERS + 1)}
    return sorted((a, b) for a, b in pairs)


def load(dsn: str, pairs: list[tuple[str, str]], rng: random.Random) -> tuple[dict[str, str], int]:
    """Users, tokens, conversations and messages by COPY; returns a token per user and the messages head."""
    password_hash = accounts.hash_password("bench-password")
    tokens = {name: "sbt_" + secrets.token_urlsafe(32) for name in users()}
    now = datetime.now(UTC)
    order = [c for c in range(len(pairs)) for _ in range(PER_CONVERSATION)]
    rng.shuffle(order)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY users (name, password_hash, role, disabled, created_at) FROM STDIN") as copy:
            for name in tokens:
                copy.write_row((name, password_hash, "user", False, now))
        with cursor.copy("COPY api_tokens (token_hash, user_name, created_at, expires_at) FROM STDIN") as copy:
            for name, token in tokens.items():
                copy.write_row((hashlib.sha256(token.encode()).hexdigest(), name, now, now + timedelta(days=1)))
        with cursor.copy("COPY conversations (id, kind, last_seq, created_at, updated_at) FROM STDIN") as copy:
            for a, b in pairs:
                copy.write_row((f"dm:{a}:{b}", "dm", PER_CONVERSATION, now, now))
        with cursor.copy("COPY dm_members (conversation_id, user_name) FROM STDIN") as copy:
            for a, b in pairs:
                copy.write_row((f"dm:{a}:{b}", a))
                copy.write_row((f"dm:{a}:{b}", b))
        columns = "conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at, stream_pos"
        seqs = [0] * len(pairs)
        with cursor.copy(f"COPY messages ({columns}) FROM STDIN") as copy:
            for position, c in enumerate(order, start=1):
                a, b = pairs[c]
                seqs[c] += 1
                sender, to = (a, b) if position % 2 else (b, a)
                body = f"message {seqs[c]} of a chat that goes on for a while"
                stored = now - timedelta(seconds=len(order) - position)
                copy.write_row(
                    (f"dm:{a}:{b}", seqs[c], sender, f"m{position}", body, f"dm/{to}/{sender}", b"{}", stored, position)
                )
        cursor.execute("UPDATE stream_positions SET position = %s WHERE name = 'messages'", (len(order),))
        settle(connection)
    return tokens, len(order)


class Storm:
    """The phones' requests against ``base``; latencies of every request, in seconds."""

    def __init__(self, base: str, tokens: dict[str, str], pairs: list[tuple[str, str]], head: int) -> None:
        self.base = base
        self.tokens = tokens
        self.head = head
        self.conversations: dict[str, list[str]] = {name: [] for name in tokens}
        for a, b in pairs:
            self.conversations[a].append(f"dm:{a}:{b}")
            self.conversations[b].append(f"dm:{a}:{b}")
        self.latencies: list[float] = []
        self.kinds: Counter[str] = Counter()
        #: The latencies by kind of request (sync, history); filled by :func:`replay` only.
        self.by_kind: dict[str, list[float]] = {}
        #: Each phone's requests (paths) in the order it sent them, as the last round played them.
        self.played: dict[str, list[tuple[str, str]]] = {}

    async def _get(self, http: httpx.AsyncClient, user: str, path: str, kind: str) -> dict[str, object]:
        self.played.setdefault(user, []).append((kind, path))
        started = time.perf_counter()
        answer = await http.get(path, headers={"Authorization": f"Bearer {self.tokens[user]}"})
        self.latencies.append(time.perf_counter() - started)
        self.kinds[kind] += 1
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")
        found: dict[str, object] = answer.json()
        return found

    async def _phone(self, http: httpx.AsyncClient, user: str) -> None:
        cursor = f"v1.{self.head - BEHIND}.0.0"
        while True:
            page = await self._get(http, user, f"/v1/sync?since={cursor}&limit=100", "sync")
            cursor = str(page["next"])
            if not page["more"]:
                break
        for conversation in self.conversations[user]:
            page = await self._get(http, user, f"/v1/conversations/{conversation}/messages?limit=50", "history")
            if page["next"] is not None:
                path = f"/v1/conversations/{conversation}/messages?limit=50&before={page['next']}"
                await self._get(http, user, path, "history")

    def write_requests(self, file: Path) -> Counter[str]:
        """The requests of the last round, for bench/httpload.c (``phone<TAB>token<TAB>path`` per line, each
        phone's lines together and in order); returns how many of each kind a round has."""
        kinds: Counter[str] = Counter()
        with file.open("w") as out:
            for user, requests in self.played.items():
                for kind, path in requests:
                    out.write(f"{user}\t{self.tokens[user]}\t{path}\n")
                    kinds[kind] += 1
        return kinds

    async def round(self, concurrency: int) -> None:
        self.played.clear()
        queue: asyncio.Queue[str] = asyncio.Queue()
        for user in self.tokens:
            queue.put_nowait(user)

        async def client() -> None:
            async with httpx.AsyncClient(base_url=self.base, trust_env=False, timeout=60) as http:
                while not queue.empty():
                    await self._phone(http, queue.get_nowait())

        await asyncio.gather(*(client() for _ in range(concurrency)))


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of the server and its worker processes so far."""
    total = 0.0
    for each in (process, *process.children(recursive=True)):
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def start_api(
    url: str, workdir: Path, workers: int, code: Path = REPO, **settings: str
) -> tuple[subprocess.Popen[bytes], str]:
    """``switchboard api`` from the source tree ``code`` (this one by default), in this environment, with
    ``settings`` as more environment variables."""
    port, metrics_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "PYTHONPATH": str(code),
        "SWITCHBOARD_DATABASE_URL": url,
        "SWITCHBOARD_LOG__LEVEL": "WARNING",
        "SWITCHBOARD_API__HOST": "127.0.0.1",
        "SWITCHBOARD_API__PORT": str(port),
        "SWITCHBOARD_API__METRICS_PORT": str(metrics_port),
        "SWITCHBOARD_API__METRICS_HOST": "127.0.0.1",
        **settings,
    }
    if workers != 1:
        env["SWITCHBOARD_API__WORKERS"] = str(workers)
    with (workdir / "api.log").open("wb") as log:  # the child keeps its own descriptor
        api = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api"], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    METRICS_PORTS[api.pid] = metrics_port
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", trust_env=False).status_code == 200:
                return api, base
        except httpx.TransportError:
            pass
        if api.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start; see {workdir / 'api.log'}")
        time.sleep(0.2)


def server_histogram(api: subprocess.Popen[bytes]) -> Counter[float]:
    """The API's own answer times so far (``switchboard_api_request_seconds``, every route and status):
    requests per bucket bound, cumulative, from its metrics listener."""
    buckets: Counter[float] = Counter()
    try:
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORTS[api.pid]}/metrics", trust_env=False).text
    except httpx.TransportError:  # api.workers > 1 turns the workers' /metrics off (api/workers.py)
        return buckets
    for line in text.splitlines():
        if line.startswith("switchboard_api_request_seconds_bucket{"):
            labels, _, value = line.rpartition(" ")
            bound = labels.split('le="')[1].split('"')[0]
            buckets[float(bound)] += int(float(value))
    return buckets


def server_p99(before: Counter[float], after: Counter[float]) -> tuple[float, float]:
    """From two readings of :func:`server_histogram`: the share of the requests between them the API answered
    within 50 ms, and the bucket bound (seconds) under which 99% of them were answered (NaN: no metrics)."""
    counts = {bound: after[bound] - before[bound] for bound in after}
    total = counts.get(float("inf"), 0)
    if not total:
        return float("nan"), float("nan")
    p99 = next(bound for bound in sorted(counts) if counts[bound] >= 0.99 * total)
    return counts.get(0.05, 0) / total, p99


def hottest(raw: Path, top: int = 25) -> list[tuple[str, float]]:
    """From py-spy's collapsed stacks: the share of samples each function appears in (inclusive)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame.split(" (")[0] + " (" + frame.split(" (")[-1] if " (" in frame else frame] += int(count)
    return [(frame, 100.0 * n / max(total, 1)) for frame, n in inclusive.most_common(top)]


def percentile(latencies: list[float], share: float) -> float:
    """The latency (seconds) under which ``share`` of ``latencies`` are, in milliseconds."""
    ordered = sorted(latencies)
    return round(ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000, 1)


def replay(
    binary: Path, base: str, storm: Storm, workdir: Path, *, concurrency: int, rounds: int
) -> tuple[float, float]:
    """Play the requests of the storm's last round ``rounds`` times with bench/httpload.c, ``concurrency``
    connections; fills ``storm.latencies`` and ``storm.kinds`` and returns the generator's elapsed seconds and
    CPU seconds (its user + system time)."""
    requests, latencies = workdir / "storm-requests.txt", workdir / "storm-latencies.txt"
    kinds = storm.write_requests(requests)
    command = [str(binary), "--port", base.rpartition(":")[2], "--requests", str(requests)]
    command += ["--latencies", str(latencies), "--connections", str(concurrency), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"httpload failed ({done.returncode}): {done.stderr.strip()}")
    summary = json.loads(done.stdout)
    order = [kind for requests in storm.played.values() for kind, _ in requests]
    storm.latencies, storm.by_kind = [], {kind: [] for kind in kinds}
    for line in latencies.read_text().splitlines():
        index, nanoseconds = line.split()
        storm.latencies.append(int(nanoseconds) / 1e9)
        storm.by_kind[order[int(index)]].append(int(nanoseconds) / 1e9)
    if summary["requests"] != len(storm.latencies) or summary["errors"]:
        raise RuntimeError(f"httpload: {summary}")
    storm.kinds = Counter({kind: n * rounds for kind, n in kinds.items()})
    return float(summary["elapsed_s"]), float(summary["cpu_s"])


def measure(
    args: argparse.Namespace,
    url: str,
    workdir: Path,
    code: Path,
    storm: Storm,
    spy_file: Path | None,
    binary: Path | None,
) -> dict[str, float]:
    """Start the API from ``code``, warm it up with one round (recording its requests), measure ``args.rounds``
    with the C generator ``binary`` (None: with the Python client), stop it."""
    api, base = start_api(url, workdir, args.workers, code)
    spy = None
    try:
        server = psutil.Process(api.pid)
        storm.base = base
        asyncio.run(storm.round(args.concurrency))  # warm-up: connections, caches, plans
        storm.latencies.clear()
        storm.kinds.clear()
        if spy_file is not None:
            command = ["py-spy", "record", "--pid", str(api.pid), "--format", "raw", "-o", str(spy_file)]
            command += ["--subprocesses", "--nonblocking", *(["--gil"] if args.py_spy_gil else [])]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu_before = cpu_seconds(server)
        client_before = cpu_seconds(psutil.Process())
        histogram_before = server_histogram(api)
        started = time.perf_counter()
        if binary is not None:
            elapsed, client_cpu = replay(binary, base, storm, workdir, concurrency=args.concurrency, rounds=args.rounds)
        else:

            async def rounds() -> None:
                for _ in range(args.rounds):
                    await storm.round(args.concurrency)

            asyncio.run(rounds())
            elapsed = time.perf_counter() - started
            client_cpu = cpu_seconds(psutil.Process()) - client_before
        cpu = cpu_seconds(server) - cpu_before
        within_50ms, server_p99_bound = server_p99(histogram_before, server_histogram(api))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None
    finally:
        if spy is not None:
            spy.kill()
        api.terminate()
        api.wait()
    requests = len(storm.latencies)
    latencies = sorted(storm.latencies)
    by_kind = {f"{kind}_p99_ms": percentile(values, 0.99) for kind, values in storm.by_kind.items()}
    return {
        "workers": args.workers,
        "concurrency": args.concurrency,
        "requests": requests,
        "sync_requests": storm.kinds["sync"],
        "history_requests": storm.kinds["history"],
        "requests_per_second": round(requests / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": percentile(latencies, 0.99),
        **by_kind,
        "server_within_50ms": round(within_50ms * 100, 1),
        "server_p99_at_most_ms": server_p99_bound * 1000,
        "api_cpu_ms_per_request": round(cpu * 1000 / requests, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / requests, 2),
        "client_cpu_share": round(client_cpu / elapsed, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (every user once per round)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="api.workers")
    parser.add_argument(
        "--client",
        choices=["c", "python"],
        default="c",
        help="the measured rounds' client: bench/httpload.c (default) or the Python client of the warm-up",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also run the API from this source tree (the code before a change, from git archive), alternating "
        "with this one, on the same database",
    )
    parser.add_argument("--pairs", type=int, default=1, help="with --before: how many before/after pairs")
    parser.add_argument("--py-spy", type=Path, default=None, help="record the server with py-spy into this file")
    parser.add_argument(
        "--py-spy-gil", action="store_true", help="with --py-spy: only samples of the thread holding the GIL (CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    args = parser.parse_args()
    database = BenchDatabase.create()
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-storm-"))
    try:
        engine = make_engine(database.url)
        upgrade(engine)
        engine.dispose()
        pairs = conversation_pairs()
        tokens, head = load(database.dsn, pairs, random.Random(1))
        storm = Storm("", tokens, pairs, head)
        binary = build_loadgen(workdir, HTTPLOAD) if args.client == "c" else None
        runs = [("before", args.before), ("after", REPO)] * args.pairs if args.before is not None else [("", REPO)]
        for label, code in runs:
            spy = args.py_spy if label != "before" else None
            figures = measure(args, database.url, workdir, code, storm, spy, binary)
            prefix = f"{label}: " if label else ""
            print(
                f"{prefix}{figures['requests']} requests ({figures['sync_requests']} sync pages, "
                f"{figures['history_requests']} history pages), {args.concurrency} concurrent, "
                f"{args.workers} API process(es)"
            )
            print(
                f"{prefix}{figures['requests_per_second']:.0f} requests/s, "
                f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                f"API CPU {figures['api_cpu_ms_per_request']:.2f} ms per request (the {args.client} client's: "
                f"{figures['client_cpu_ms_per_request']:.2f} ms, {figures['client_cpu_share']:.0%} of one core; "
                f"load average {figures['load_average']})",
                flush=True,
            )
            if args.workers == 1:  # api.workers turns the API's /metrics off (api/workers.py)
                print(
                    f"{prefix}the API's own answer times (its metrics, from request to response, without the "
                    f"client's and the kernel's queues): {figures['server_within_50ms']:.1f}% within 50 ms, p99 at "
                    f"most {figures['server_p99_at_most_ms']:g} ms",
                    flush=True,
                )
            if "sync_p99_ms" in figures:
                print(f"{prefix}p99 by kind: sync {figures['sync_p99_ms']} ms, history {figures['history_p99_ms']} ms")
            if args.json:
                print(json.dumps({"code": label or "this", **figures}))
        if args.py_spy is not None:
            for frame, share in hottest(args.py_spy):
                print(f"{share:5.1f}%  {frame}")
    finally:
        database.drop()


if __name__ == "__main__":
    main()
