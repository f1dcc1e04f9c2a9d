"""A bridge whose subscriptions the broker refuses exits at once with a one-line error, instead of sitting
"connected" and storing nothing.

Real processes: ``switchboard broker`` on port 0 and ``switchboard bridge`` started from the CLI. The bridge
keeps its own database, where its account is a service account; the broker's database knows the same name
and password as an ordinary user (a bridge pointed at the wrong broker, or an account made by hand). The
login succeeds, and the broker refuses the ordinary user ``dm/#`` with SUBACK 0x80 [MQTT-3.9.3-2].
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlmodel import Session

from switchboard import accounts
from switchboard.db import make_engine, upgrade
from tests.helpers import SWITCHBOARD, start_service, switchboard_env

EXIT_BOUND_SECONDS = 60


def test_a_bridge_whose_subscriptions_are_refused_exits_with_one_line_saying_why(tmp_path: Path) -> None:
    password = "bridge-password-1"
    broker_url, bridge_url = f"sqlite:///{tmp_path / 'broker.db'}", f"sqlite:///{tmp_path / 'bridge.db'}"
    for url in (broker_url, bridge_url):
        engine = make_engine(url)
        upgrade(engine)
        if url == broker_url:
            with Session(engine) as session:
                accounts.create_user(session, "switchboard-bridge", password)  # ordinary, on the broker's side
                session.commit()
        engine.dispose()
    broker = start_service("broker", env=switchboard_env(broker_url), cwd=tmp_path)
    try:
        port = broker.out.wait_for(r"mqtt listening on [\d.]+:(\d+)", 60).group(1)
        bridge = subprocess.run(
            [*SWITCHBOARD, "bridge"],
            env=switchboard_env(
                bridge_url, SWITCHBOARD_BRIDGE__BROKER_PORT=port, SWITCHBOARD_BRIDGE__PASSWORD=password
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=EXIT_BOUND_SECONDS,
            check=False,
        )
    finally:
        broker.stop()
    assert bridge.returncode == 1, bridge.stdout + bridge.stderr
    errors = [line for line in bridge.stderr.splitlines() if line.startswith("switchboard: error:")]
    assert len(errors) == 1, bridge.stderr
    assert "refused subscription dm/# for account 'switchboard-bridge'" in errors[0]
    assert "service account" in errors[0]
