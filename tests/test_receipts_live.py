"""Receipts everywhere (issue 16 §4): ``POST /v1/conversations/{conversation}/read`` publishes the same
``receipt/{to}/{from}`` event a client publishes over MQTT, through the live-events outbox and the bridge, so
the sender (mosquitto_sub) and the reader's other devices (paho, mosquitto_sub) see it live. Real stack on
Postgres and SQLite."""

from __future__ import annotations

import json
import secrets

import httpx
from sqlalchemy import Engine, func, select
from sqlmodel import col

from switchboard.tables import LiveEvent, RejectedMessage
from tests.conftest import Users
from tests.helpers import MosquittoSub, PahoClient, Stack, mosquitto_pub, wait_for


def _send(stack: Stack, sender: tuple[str, str], topic: str, count: int) -> None:
    for n in range(count):
        mosquitto_pub(stack.mqtt_port, *sender, topic, json.dumps({"id": f"{secrets.token_hex(4)}-{n}", "body": "hi"}))


def _stored(stack: Stack, reader: tuple[str, str], conversation: str, count: int) -> None:
    def newest() -> int:
        messages = http.get(f"/v1/conversations/{conversation}/messages", params={"limit": 1}).json()["messages"]
        return int(messages[0]["seq"]) if messages else 0

    with stack.http(*reader) as http:
        wait_for(lambda: newest() == count, what=f"{count} messages stored in {conversation}")


def _receipt(conversation: str, seq: int) -> dict[str, object]:
    return {"conversation": conversation, "up_to_seq": seq, "status": "read"}


def _outbox_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(LiveEvent)).scalar_one())


def _rejected_receipts(engine: Engine, reader: str) -> list[str]:
    with engine.connect() as connection:
        query = select(col(RejectedMessage.reason)).where(col(RejectedMessage.topic).like(f"receipt/%/{reader}"))
        return list(connection.execute(query).scalars())


def test_a_dm_read_through_rest_reaches_the_sender_and_the_readers_other_devices_live(
    stack: Stack, users: Users
) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    conversation = "dm:" + ":".join(sorted((alice[0], bob[0])))
    _send(stack, alice, f"dm/{bob[0]}/{alice[0]}", 3)
    _stored(stack, bob, conversation, 3)
    sender = MosquittoSub(stack.mqtt_port, *alice, f"receipt/{alice[0]}/+")
    phone = PahoClient(stack.mqtt_port, f"bob-phone-{secrets.token_hex(3)}", *bob, clean=True)
    try:
        assert sender.granted() == [1]
        assert phone.connect() == "Success" and phone.subscribe(f"receipt/+/{bob[0]}") == [1]
        with stack.http(*bob) as http:
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 2}).status_code == 200
            # Nothing moved: nothing is published (the next receipt seen is the one for 3).
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 1}).json()["read_seq"] == 2
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 9}).json()["read_seq"] == 3
        topic = f"receipt/{alice[0]}/{bob[0]}"
        seen = sender.wait_messages(2)
        assert [(t, json.loads(p)) for t, p in seen] == [
            (topic, _receipt(conversation, 2)),
            (topic, _receipt(conversation, 3)),
        ]
        wait_for(lambda: len(phone.messages) >= 2, what="bob's other device gets both receipts")
        assert [(t, json.loads(p), qos) for t, p, qos, _ in phone.messages] == [
            (topic, _receipt(conversation, 2), 1),
            (topic, _receipt(conversation, 3), 1),
        ]
    finally:
        phone.close()
        sender.close()
    # Published and acknowledged: the outbox is empty again; the bridge recorded its own receipts again
    # without a rejection (watermarks only move forward).
    wait_for(lambda: _outbox_rows(users.engine) == 0, what="the outbox emptied")
    assert _rejected_receipts(users.engine, bob[0]) == []
    assert _bridge_metric(stack, "switchboard_bridge_live_events_total") >= 2


def _bridge_metric(stack: Stack, name: str) -> float:
    port = int(stack.out.wait_for(r"bridge metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


def test_a_group_read_through_rest_tells_the_authors_of_the_messages_read(stack: Stack, users: Users) -> None:
    alice, bob, carol, dave = (users.user(name) for name in ("alice", "bob", "carol", "dave"))
    group = users.group("team", [alice[0], bob[0], carol[0], dave[0]])
    conversation = f"group:{group}"
    _send(stack, alice, f"group/{group}/{alice[0]}", 2)  # seq 1, 2
    _send(stack, carol, f"group/{group}/{carol[0]}", 1)  # seq 3
    _stored(stack, bob, conversation, 3)
    subs = {who[0]: MosquittoSub(stack.mqtt_port, *who, f"receipt/{who[0]}/+") for who in (alice, carol, dave)}
    other_device = MosquittoSub(stack.mqtt_port, *bob, f"receipt/+/{bob[0]}")
    try:
        for sub in (*subs.values(), other_device):
            assert sub.granted() == [1]
        with stack.http(*bob) as http:
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 3}).status_code == 200
        for author in (alice, carol):
            assert [(t, json.loads(p)) for t, p in subs[author[0]].wait_messages(1)] == [
                (f"receipt/{author[0]}/{bob[0]}", _receipt(conversation, 3))
            ]
        assert sorted(t for t, _ in other_device.wait_messages(2)) == sorted(
            [f"receipt/{alice[0]}/{bob[0]}", f"receipt/{carol[0]}/{bob[0]}"]
        )
        # bob reads his own message only: nobody else to tell, his other devices still hear of it.
        _send(stack, bob, f"group/{group}/{bob[0]}", 1)  # seq 4
        _stored(stack, bob, conversation, 4)
        with stack.http(*bob) as http:
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 4}).status_code == 200
        assert other_device.wait_messages(3)[2] == (
            f"receipt/{bob[0]}/{bob[0]}",
            json.dumps(_receipt(conversation, 4), separators=(",", ":")),
        )
        # dave wrote nothing bob read: his first receipt is the one for his own message, seq 5.
        _send(stack, dave, f"group/{group}/{dave[0]}", 1)
        _stored(stack, bob, conversation, 5)
        with stack.http(*bob) as http:
            assert http.post(f"/v1/conversations/{conversation}/read", json={"up_to_seq": 5}).status_code == 200
        assert [(t, json.loads(p)) for t, p in subs[dave[0]].wait_messages(1)] == [
            (f"receipt/{dave[0]}/{bob[0]}", _receipt(conversation, 5))
        ]
        assert len(subs[alice[0]].messages()) == 1 and len(subs[carol[0]].messages()) == 1
    finally:
        for sub in (*subs.values(), other_device):
            sub.close()
    wait_for(lambda: _outbox_rows(users.engine) == 0, what="the outbox emptied")
    assert _rejected_receipts(users.engine, bob[0]) == []
