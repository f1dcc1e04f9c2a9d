"""SIGTERM to each service run alone (docker-compose stops containers with it): work in hand is finished,
nothing acknowledged is lost, and the process exits 0.

The bridge and API tests hold an ``ACCESS EXCLUSIVE`` lock on the messages table, so the signal arrives
while a batch is being committed (or a request is being answered) and cannot finish before the lock is
released: the test sees the process wait for it, not just a lucky moment between two batches.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time

import httpx
from sqlalchemy import text

from tests.deploy import Deployment, Publisher, assert_exactly_once_in_order, json_payloads
from tests.helpers import Service, service_metric, start_service, wait_for
from tests.rawmqtt import PUBACK, RawClient

CONVERSATION = "dm:alice:bob"


def _still_running(service: Service, seconds: float) -> bool:
    time.sleep(seconds)
    return service.process.poll() is None


def test_sigterm_to_the_bridge_commits_and_acknowledges_the_batch_in_hand(postgres_deployment: Deployment) -> None:
    d = postgres_deployment
    alice, alice_pw = d.user("alice")
    d.user("bob")
    d.start_broker()
    first = d.start_bridge()
    first.out.wait_for("bridge: connected", 60)
    publisher = Publisher(d.port, alice, alice_pw)
    Publisher.wait_acked(publisher.publish("dm/bob/alice", json_payloads("a", 100)))
    d.wait_stored(CONVERSATION, 100)

    with d.engine.connect() as lock:
        lock.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        later = publisher.publish("dm/bob/alice", json_payloads("b", 500))
        wait_for(lambda: service_metric(first, "switchboard_bridge_lag") > 0, what="the bridge to hold a batch")
        time.sleep(0.5)  # it has taken the batch and is blocked committing it
        first.process.send_signal(signal.SIGTERM)
        assert _still_running(first, 2), "the bridge must finish its batch before it exits"
        lock.rollback()
    assert first.stop(signal.SIGTERM) == 0, first.output()
    first.out.wait_for("bridge: stopping; every batch taken is committed and acknowledged", 1)
    first.out.wait_for("bridge: stopped", 1)
    committed = len(d.stored(CONVERSATION))
    assert committed > 100

    Publisher.wait_acked(later)
    second = d.start_bridge()
    second.out.wait_for("bridge: connected", 60)
    rows = d.wait_stored(CONVERSATION, 600)
    assert_exactly_once_in_order(rows, [f"a{n:05d}" for n in range(100)] + [f"b{n:05d}" for n in range(500)])
    # The first bridge acknowledged what it committed: nothing of it came back to the second one.
    assert service_metric(second, "switchboard_bridge_duplicates_total") == 0
    assert service_metric(second, "switchboard_bridge_stored_total") == 600 - committed
    publisher.close()


def test_sigterm_to_the_api_answers_the_request_in_progress(postgres_deployment: Deployment) -> None:
    d = postgres_deployment
    alice, alice_pw = d.user("alice")
    d.user("bob")
    api = start_service("api", env=d.env, cwd=d.workdir)
    port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
    url = f"http://127.0.0.1:{port}/v1/conversations/{CONVERSATION}/messages"
    answers: list[httpx.Response] = []
    with d.engine.connect() as lock:
        lock.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        request = threading.Thread(
            target=lambda: answers.append(httpx.get(url, auth=(alice, alice_pw), timeout=60, trust_env=False))
        )
        request.start()
        time.sleep(1.5)  # the request is waiting for the lock
        api.process.send_signal(signal.SIGTERM)
        assert _still_running(api, 2), "the API must answer the request in progress before it exits"
        assert not answers
        lock.rollback()
    request.join(30)
    assert [answer.status_code for answer in answers] == [200]
    assert api.stop(signal.SIGTERM) == 0, api.output()
    api.out.wait_for("switchboard: stopping", 1)


def test_sigterm_to_the_broker_keeps_what_it_acknowledged(postgres_deployment: Deployment) -> None:
    d = postgres_deployment
    alice, alice_pw = d.user("alice")
    bob, bob_pw = d.user("bob")
    broker = d.start_broker()
    client_id = f"phone-{secrets.token_hex(3)}"
    device = RawClient(d.port)
    device.connect(client_id, bob, bob_pw, clean=False)
    assert device.subscribe(("dm/bob/+", 1)) == [1]
    device.drop()
    sender = RawClient(d.port)
    sender.connect("laptop", alice, alice_pw)
    for n in range(3):
        sender.publish("dm/bob/alice", f"queued {n}".encode(), qos=1)
        sender.expect(PUBACK)  # from here on the broker answers for it
    assert broker.stop(signal.SIGTERM) == 0, broker.output()
    broker.out.wait_for("switchboard: stopping", 1)
    assert sender.closed_by_broker()

    d.start_broker()
    again = RawClient(d.port)
    assert again.connect(client_id, bob, bob_pw, clean=False).body == b"\x01\x00"  # session present
    assert [p.payload for p in again.publishes(3, ack=True)] == [b"queued 0", b"queued 1", b"queued 2"]
    for client in (device, sender, again):
        client.close()
