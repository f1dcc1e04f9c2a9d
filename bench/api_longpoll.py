"""Long-polling ``/v1/sync?timeout=`` at scale (issue 18): W clients waiting on one ``switchboard up`` process.

Makes W users with a bearer token each, starts ``switchboard up`` (broker, bridge and API in one process)
on Postgres (LISTEN/NOTIFY) or SQLite (the shared poll), and opens one ``GET /v1/sync?since=now&timeout=60``
per user. Then reports:

- the process's resident memory and CPU while nobody waits, and while the W clients wait (an idle
  window of ``--idle`` seconds each: the waiters' cost, with no database query per waiter);
- for ``--messages`` DMs, each to a different waiting user, published over MQTT (mosquitto_pub): the
  time from the message's ``stored_at`` (set by the bridge when its transaction begins) to the waiting
  client receiving its answer, median and max. The client re-polls after each answer. On Postgres the
  bench also LISTENs itself, so the time splits at the commit (its NOTIFY reaching a listener): the
  bridge's part (``stored_at`` to commit) and the API's (commit to answer).

    uv run python bench/api_longpoll.py [--waiters 1000] [--messages 30] [--database postgres|sqlite]

Needs ``mosquitto_pub`` and, for Postgres, ``BENCH_PG_ADMIN_DSN`` (see bench/database.py). Run by hand;
results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import psycopg
from psycopg import sql as psql
from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.database import BenchDatabase  # noqa: E402
from switchboard import accounts, streams  # noqa: E402
from switchboard.db import make_engine, upgrade  # noqa: E402
from switchboard.tables import ApiToken, User  # noqa: E402


def make_users(url: str, count: int) -> dict[str, str]:
    """``count`` users with a token each (one password hash for all: argon2 is slow on purpose)."""
    engine = make_engine(url)
    upgrade(engine)
    tokens = {f"w{i:04d}": "sbt_" + secrets.token_urlsafe(32) for i in range(count)}
    now = datetime.now(UTC)
    password_hash = accounts.hash_password("bench-password")
    with engine.begin() as connection:
        connection.execute(
            insert(User.__table__),  # type: ignore[attr-defined]
            [
                {"name": n, "password_hash": password_hash, "role": "user", "disabled": False, "created_at": now}
                for n in tokens
            ],
        )
        connection.execute(
            insert(ApiToken.__table__),  # type: ignore[attr-defined]
            [
                {
                    "token_hash": hashlib.sha256(t.encode()).hexdigest(),
                    "user_name": n,
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                }
                for n, t in tokens.items()
            ],
        )
    engine.dispose()
    return tokens


def start_stack(url: str, workdir: Path) -> tuple[subprocess.Popen[str], int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SWITCHBOARD_DATABASE_URL": url,
            "SWITCHBOARD_LOG__LEVEL": "WARNING",
            "SWITCHBOARD_MQTT__HOST": "127.0.0.1",
            "SWITCHBOARD_MQTT__PORT": "0",
            "SWITCHBOARD_MQTT__WS_PORT": "0",
            "SWITCHBOARD_MQTT__METRICS_PORT": "0",
            "SWITCHBOARD_BRIDGE__METRICS_PORT": "0",
            "SWITCHBOARD_API__METRICS_PORT": "0",
            "SWITCHBOARD_API__HOST": "127.0.0.1",
            "SWITCHBOARD_API__PORT": "0",
        }
    )
    stack = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up"],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert stack.stdout is not None
    mqtt = api = 0
    for line in stack.stdout:
        if found := re.search(r"mqtt listening on [\d.]+:(\d+)", line):
            mqtt = int(found.group(1))
        if found := re.search(r"api listening on http://[\d.]+:(\d+)", line):
            api = int(found.group(1))
        if "ready" in line:
            break
    threading.Thread(target=stack.stdout.read, daemon=True).start()  # keep the pipe drained
    return stack, mqtt, api


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Commits:
    """The times (``time.time()``) at which this process's own LISTEN heard the messages stream's notifications."""

    def __init__(self, dsn: str) -> None:
        self.seen: list[float] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, args=(dsn,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "LISTEN did not start"

    def _listen(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(psql.SQL("LISTEN {}").format(psql.Identifier(streams.CHANNEL)))
            self._ready.set()
            while not self._stop.is_set():
                for notify in connection.notifies(timeout=0.2):
                    if notify.payload == streams.MESSAGES:
                        self.seen.append(time.time())

    def first_after(self, moment: float) -> float | None:
        return next((t for t in self.seen if t >= moment), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms" if values else "not measured"


async def run(
    args: argparse.Namespace,
    tokens: dict[str, str],
    mqtt: int,
    api: int,
    server: psutil.Process,
    commits: Commits | None,
) -> None:
    base = f"http://127.0.0.1:{api}"
    limits = httpx.Limits(max_connections=args.waiters + 10, max_keepalive_connections=args.waiters + 10)
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=120, limits=limits) as http:
        names = list(tokens)
        auth = {name: {"Authorization": f"Bearer {tokens[name]}"} for name in names}
        cursors = {}
        for name in names:  # the first call of each also fills the API's token cache
            cursors[name] = (await http.get("/v1/sync", headers=auth[name])).json()["next"]
        await asyncio.sleep(1)
        rss_idle, cpu_idle = server.memory_info().rss, cpu(server)
        await asyncio.sleep(args.idle)
        cpu_idle = (cpu(server) - cpu_idle) / args.idle
        answers: dict[str, asyncio.Future[tuple[float, dict[str, object]]]] = {}

        async def poll(name: str) -> None:
            answer = await http.get("/v1/sync", params={"since": cursors[name], "timeout": 60}, headers=auth[name])
            received = time.time()
            page = answer.json()
            cursors[name] = page["next"]
            answers[name].set_result((received, page))

        polls: set[asyncio.Task[None]] = set()

        def start(name: str) -> None:
            answers[name] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(poll(name))
            polls.add(task)
            task.add_done_callback(polls.discard)

        for name in names:
            start(name)
        # Until the API has taken every request (each reads its empty page once, then waits): its CPU settles.
        for _ in range(60):
            before = cpu(server)
            await asyncio.sleep(2)
            if cpu(server) - before < 0.1:
                break
        rss_waiting, cpu_waiting = server.memory_info().rss, cpu(server)
        await asyncio.sleep(args.idle)
        cpu_waiting = (cpu(server) - cpu_waiting) / args.idle
        early = sum(1 for f in answers.values() if f.done())
        latencies = []
        bridge_part: list[float] = []
        api_part: list[float] = []
        for n in range(args.messages):
            published = time.time()
            to, sender = names[(2 * n) % len(names)], names[(2 * n + 1) % len(names)]
            payload = f'{{"id": "lp-{n}", "body": "wake up"}}'
            command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt), "-u", sender, "-P", tokens[sender]]
            publisher = await asyncio.create_subprocess_exec(
                *command, "-q", "1", "-t", f"dm/{to}/{sender}", "-m", payload
            )
            assert await publisher.wait() == 0
            received, page = await asyncio.wait_for(answers[to], 30)
            messages = page["messages"]
            assert isinstance(messages, list) and messages, page
            stored = datetime.fromisoformat(str(messages[0]["stored_at"]).replace("Z", "+00:00")).timestamp()
            latencies.append((received - stored) * 1000)
            committed = commits.first_after(published) if commits is not None else None
            if committed is not None:
                bridge_part.append((committed - stored) * 1000)
                api_part.append((received - committed) * 1000)
            start(to)
            await asyncio.sleep(0.2)
        print(f"{args.waiters} long-polling clients on one `switchboard up` ({args.database})")
        print(f"resident memory: {rss_idle / 2**20:.0f} MiB without waiters, {rss_waiting / 2**20:.0f} MiB with them")
        print(
            f"process CPU while idle: {cpu_idle * 100:.1f}% of a core without waiters, {cpu_waiting * 100:.1f}% "
            f"with {args.waiters} waiting ({early} answered before any message: should be 0)"
        )
        latencies.sort()
        print(
            f"commit to answer, {len(latencies)} DMs each to a different waiting client: median "
            f"{statistics.median(latencies):.0f} ms, max {latencies[-1]:.0f} ms"
        )
        print(f"  of which the bridge's (stored_at to commit, as this bench's LISTEN hears it): {_spread(bridge_part)}")
        print(f"  and the API's (commit to the client's answer): {_spread(api_part)}")
        for task in list(polls):
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of each idle CPU window")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-longpoll-"))
    database = BenchDatabase.create() if args.database == "postgres" else None
    url = database.url if database is not None else f"sqlite:///{workdir}/longpoll.db"
    stack = None
    try:
        tokens = make_users(url, args.waiters)
        stack, mqtt, api = start_stack(url, workdir)
        commits = Commits(database.dsn) if database is not None else None
        try:
            asyncio.run(run(args, tokens, mqtt, api, psutil.Process(stack.pid), commits))
        finally:
            if commits is not None:
                commits.stop()
    finally:
        if stack is not None:
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(60)
            except subprocess.TimeoutExpired:
                stack.kill()
        if database is not None:
            database.drop()


if __name__ == "__main__":
    main()
