"""``switchboard broker`` runs without the ORM, SQLModel, Alembic or the other services loaded: they cost the
broker ~30 MB of resident memory (issue 14: 10,000 idle connections within 100 MB), for a handful of
primary-key reads that SQLAlchemy Core does (switchboard/schema.py).

The real command runs in a subprocess on a SQLite database; a thread of that process waits for it to listen,
logs in with an API token, with a password and with a wrong password, subscribes to its inbox, publishes a
DM (the directory lookups), then lists the modules the process has loaded (metrics and WebSocket off: their
libraries are not loaded either). A guard on what is loaded, not a
timing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

from switchboard import accounts, tokens
from switchboard.db import make_engine, session_scope, upgrade
from tests.helpers import REPO, free_port, switchboard_env

#: Package prefixes the broker's process must not load.
FORBIDDEN = ("alembic", "sqlmodel", "sqlalchemy.orm", "mako", "psycopg", "fastapi", "api", "bridge", "paho", "amqtt")
#: ... nor, with metrics and the WebSocket listener off, the libraries only they need.
FORBIDDEN_UNCONFIGURED = ("prometheus_client", "websockets")
FORBIDDEN_MODULES = ("switchboard.tables", "switchboard.accounts", "switchboard.directory", "switchboard.db_orm")

PROBE = textwrap.dedent("""\
    import json, os, sys, threading, time
    from tests.rawmqtt import RawClient

    def probe(port, user, password, token):
        for _ in range(600):
            try:
                client = RawClient(port)
                break
            except OSError:
                time.sleep(0.1)
        codes = [client.connect("probe-token", user, token).body[1]]
        assert client.subscribe((f"dm/{user}/+", 1)) == [1]
        client.publish(f"dm/{user}/{user}", b"{}", qos=0)
        client.publish(f"dm/nobody-{user}/{user}", b"{}", qos=0)
        for secret in (password, "wrong"):
            codes.append(RawClient(port).connect("probe-" + secret[:4], user, secret).body[1])
        time.sleep(0.5)
        print("MODULES " + json.dumps({"codes": codes, "modules": sorted(sys.modules)}), flush=True)
        os._exit(0)

    threading.Thread(target=probe, args=(int(sys.argv[1]), *sys.argv[2:5]), daemon=True).start()
    sys.argv = ["switchboard", "broker"]
    from cli.main import main
    sys.exit(main())
    """)


def test_the_broker_process_loads_no_orm_alembic_or_other_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/broker.db"
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        accounts.create_user(session, "probe", "probe-password")
        token, _ = tokens.issue(session, "probe", timedelta(hours=1))
    engine.dispose()
    port = free_port()
    env = switchboard_env(
        url, SWITCHBOARD_MQTT__PORT=str(port), SWITCHBOARD_MQTT__WS_PORT="null", SWITCHBOARD_MQTT__METRICS_PORT="null"
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(port), "probe", "probe-password", token],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("MODULES ")]
    assert lines, f"the probe did not finish: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    found = json.loads(lines[0].removeprefix("MODULES "))
    assert found["codes"] == [0, 0, 5]  # token and password accepted, the wrong password refused
    loaded = [
        name
        for name in found["modules"]
        if name in FORBIDDEN_MODULES
        or any(name == p or name.startswith(p + ".") for p in (*FORBIDDEN, *FORBIDDEN_UNCONFIGURED))
    ]
    assert loaded == [], f"the broker's process loaded {loaded}: import them only where a rare path needs them"
