"""``api.workers``: ``switchboard api`` as N processes accepting on one port (api/workers.py), all stopped by
one Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil

from tests.helpers import STARTUP_SECONDS, start_service, switchboard_env, wait_for


def test_two_workers_serve_one_port_and_stop_together(sqlite_url: str, tmp_path: Path) -> None:
    env = switchboard_env(sqlite_url, SWITCHBOARD_API__WORKERS="2")
    service = start_service("api", env=env, cwd=tmp_path)
    serving: list[psutil.Process] = []
    try:
        port = int(service.out.wait_for(r"api listening on http://[\d.]+:(\d+)", STARTUP_SECONDS).group(1))
        service.out.wait_for(r"api: 2 worker processes", STARTUP_SECONDS)
        parent = psutil.Process(service.process.pid)

        def workers() -> list[psutil.Process]:
            return [
                child
                for child in parent.children()
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp"))
            ]

        serving = workers()
        assert len(serving) == 2, [c.cmdline() for c in parent.children()]
        for _ in range(20):  # a new connection each time: the kernel hands them to either worker
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=10).status_code == 200
    finally:
        code = service.stop()
    assert code == 0, service.output()
    wait_for(
        lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in serving) or None,
        what="workers gone",
    )
