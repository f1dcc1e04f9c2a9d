"""The same bridge against Mosquitto (Debian's package), a broker nobody here wrote: a password file, an
ACL that gives the bridge ``#``, and two bridges sharing ``$share/switchboard/...``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import create_database, drop_database
from tests.deploy import Deployment, Publisher
from tests.helpers import mosquitto_pub, service_metric, start_service, wait_for
from tests.rawmqtt import RawClient


class Mosquitto:
    def __init__(self, directory: Path, port: int, users: dict[str, str]) -> None:
        passwords, acl, conf = directory / "passwords", directory / "acl", directory / "mosquitto.conf"
        passwords.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
        subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)
        passwords.chmod(0o600)
        acl.write_text(
            "user switchboard-bridge\ntopic readwrite #\n\n"
            "pattern write dm/+/%u\npattern read dm/%u/+\npattern read ack/%u\npattern write group/+/%u\n"
        )
        acl.chmod(0o600)
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
            "persistence false\nlog_dest stdout\n" + ("user root\n" if os.geteuid() == 0 else "")
            # As root, mosquitto would switch to its own user, who cannot read the test's private files.
        )
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)
        assert self.process.poll() is None, "mosquitto did not start"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def mosquitto_deployment(tmp_path: Path) -> Iterator[tuple[Deployment, dict[str, str]]]:
    name = f"switchboard_mosq_{secrets.token_hex(4)}"
    deployment = Deployment(create_database(name), tmp_path)
    users = dict(deployment.user(n) for n in ("alice", "bob", "carol"))
    users["switchboard-bridge"] = deployment.env["SWITCHBOARD_BRIDGE__PASSWORD"]
    broker = Mosquitto(tmp_path, deployment.port, users)
    yield deployment, users
    deployment.close()
    broker.stop()
    drop_database(name)


def test_bridge_stores_and_acks_through_mosquitto(mosquitto_deployment: tuple[Deployment, dict[str, str]]) -> None:
    d, users = mosquitto_deployment
    bridge = d.start_bridge()
    bridge.out.wait_for("bridge: connected", 60)
    for n in range(3):
        mosquitto_pub(d.port, "alice", users["alice"], "dm/bob/alice", json.dumps({"id": f"m{n}", "body": "hi"}))
    mosquitto_pub(d.port, "alice", users["alice"], "dm/bob/alice", json.dumps({"id": "m0", "body": "again"}))
    mosquitto_pub(d.port, "alice", users["alice"], "dm/bob/alice", b"{broken")
    rows = d.wait_stored("dm:alice:bob", 3)
    time.sleep(1)
    assert d.stored("dm:alice:bob") == [(1, "m0"), (2, "m1"), (3, "m2")] == rows

    # Mosquitto keeps a retained DM and sends it again (retain=1) each time the bridge subscribes; plain
    # text gets a new id each time, so the bridge stores the live copy only.
    mosquitto_pub(d.port, "alice", users["alice"], "dm/bob/alice", "kept by mosquitto", extra=("-r",))
    d.wait_stored("dm:alice:bob", 4)
    thief = RawClient(d.port)  # take the bridge's session over: it reconnects and subscribes again
    thief.connect("switchboard-bridge", "switchboard-bridge", users["switchboard-bridge"], clean=False)
    thief.disconnect()
    wait_for(lambda: sum("bridge: connected" in line for line in bridge.out.lines) == 2, what="bridge reconnected")
    mosquitto_pub(d.port, "alice", users["alice"], "dm/bob/alice", json.dumps({"id": "m3", "body": "marker"}))
    rows = d.wait_stored("dm:alice:bob", 5)
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5] and rows[4] == (5, "m3")  # the retained DM once


def test_two_bridges_sharing_a_subscription_store_everything_once(
    mosquitto_deployment: tuple[Deployment, dict[str, str]],
) -> None:
    d, users = mosquitto_deployment
    shared = {"SWITCHBOARD_BRIDGE__SHARED_GROUP": "switchboard"}
    first = d.start_bridge(**shared, SWITCHBOARD_BRIDGE__CLIENT_ID="bridge-1")
    second = d.start_bridge(**shared, SWITCHBOARD_BRIDGE__CLIENT_ID="bridge-2")
    for bridge in (first, second):
        bridge.out.wait_for("bridge: connected", 60)
    senders = [Publisher(d.port, name, users[name]) for name in ("alice", "carol")]
    infos = []
    for round_ in range(10):
        for sender in senders:
            name = "alice" if sender is senders[0] else "carol"
            payloads = [json.dumps({"id": f"{name}-{round_}-{n}", "body": "x"}).encode() for n in range(100)]
            infos += sender.publish(f"dm/bob/{name}", payloads)
    Publisher.wait_acked(infos)
    for conversation, name in (("dm:alice:bob", "alice"), ("dm:bob:carol", "carol")):
        d.wait_stored(conversation, 1000)
        time.sleep(1)
        rows = d.stored(conversation)
        assert [seq for seq, _ in rows] == list(range(1, 1001))  # gapless, no repeats
        assert sorted(msg_id for _, msg_id in rows) == sorted(
            f"{name}-{r}-{n}" for r in range(10) for n in range(100)
        )  # every message exactly once (order across two bridges is not promised)
    shares = [service_metric(bridge, "switchboard_bridge_stored_total") for bridge in (first, second)]
    assert sum(shares) == 2000 and all(share > 0 for share in shares)  # both bridges took part
    for sender in senders:
        sender.close()

    # The API beside them serves what the two bridges stored, as from Switchboard's own broker.
    api = start_service("api", env=d.env, cwd=d.workdir)
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("bob", users["bob"]), trust_env=False) as http:
            listed = http.get("/v1/conversations").json()["conversations"]
            assert sorted((c["id"], c["last_seq"]) for c in listed) == [
                ("dm:alice:bob", 1000),
                ("dm:bob:carol", 1000),
            ]
            page = http.get("/v1/conversations/dm:alice:bob/messages", params={"limit": 100}).json()["messages"]
            assert [m["seq"] for m in page] == list(range(1000, 900, -1))
            assert {m["sender"] for m in page} == {"alice"}
    finally:
        assert api.stop() == 0, api.output()
