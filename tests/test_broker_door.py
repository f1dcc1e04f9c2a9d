"""Issue 16 §1 and §3 at the broker's door: every chat message (dm/, group/) is checked before it is routed, with
the domain code the bridge stores it with (switchboard.payloads.parse_chat), the ACL and a per-user rate. A
refused message is delivered to no one (no subscriber, not the bridge: never in history) and the sender gets a
notice on ``ack/{sender}``; an MQTT 5 client also gets the reason code in its PUBACK/PUBREC (issue 15: 0x99
payload format invalid, 0x87 not authorized, 0x97 quota exceeded for the rate: the PUBACK codes MQTT 5.0
§3.4.2.1 allows, paho-mqtt drops the connection on 0x96 or 0x95 there); an MQTT 3.1.1 client still gets its
PUBACK. Real clients (paho v3 and v5, mosquitto_pub) against ``switchboard up`` on SQLite
and Postgres."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx

from switchboard.tables import Role
from tests.conftest import DOOR_BURST, Users
from tests.helpers import PahoClient, Stack, mosquitto_pub, run_mosquitto_pub, wait_for
from tests.mqtt5 import TRANSPORTS, V5Client, port_of


def notices(client: PahoClient | list[Any], me: str) -> list[dict[str, Any]]:
    """The refusal notices a client received on ``ack/{me}`` (the bridge's acks there carry a ``seq``)."""
    found = []
    for message in client.messages if isinstance(client, PahoClient) else client:
        topic, payload = message[0], message[1]
        if topic == f"ack/{me}":
            data = json.loads(payload)
            if "error" in data:
                found.append(data)
    return found


def v3(port: int, user: str, password: str, *topics: str) -> PahoClient:
    client = PahoClient(port, f"door-{secrets.token_hex(3)}", user, password, clean=True)
    assert client.connect() == "Success"
    for topic in topics:
        assert client.subscribe(topic) == [1]
    return client


def publish(client: PahoClient, topic: str, payload: bytes, qos: int = 1) -> None:
    """Publish and wait for the broker's PUBACK (MQTT 3.1.1: it comes for a refused message too)."""
    info = client.client.publish(topic, payload, qos=qos)
    info.wait_for_publish(timeout=20)
    assert info.is_published(), f"no PUBACK for a message on {topic}"


def history(stack: Stack, user: str, password: str, conversation: str) -> list[dict[str, Any]]:
    with stack.http(user, password) as http:
        answer = http.get(f"/v1/conversations/{conversation}/messages", params={"after": 0})
    if answer.status_code == 404:  # nothing stored yet
        return []
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


def test_a_refused_message_reaches_no_one_and_the_sender_is_told_on_its_ack_topic(stack: Stack, users: Users) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    receiver = v3(stack.mqtt_port, bob, bob_pw, f"dm/{bob}/+")
    sender = v3(stack.mqtt_port, alice, alice_pw, f"ack/{alice}")
    topic, conversation = f"dm/{bob}/{alice}", f"dm:{min(alice, bob)}:{max(alice, bob)}"
    try:
        refused = {
            None: b'{"id": "broken-1", "body": ',  # invalid JSON: no id can be read from it
            "big-1": json.dumps({"id": "big-1", "body": "x" * 20_000}).encode(),
            "rel-1": json.dumps(
                {"id": "rel-1", "body": "hi", "relates_to": {"kind": "poke", "sender": bob, "id": "m"}}
            ),
            "edit-1": json.dumps(
                {"id": "edit-1", "body": "changed", "relates_to": {"kind": "edit", "sender": bob, "id": "m-1"}}
            ),
        }
        for payload in refused.values():
            publish(sender, topic, payload if isinstance(payload, bytes) else payload.encode())
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, topic, b'{"id": "mp-1", "body": 7}')  # body not a string
        publish(sender, topic, b'{"id": "good-1", "body": "hello"}')

        wait_for(lambda: receiver.messages, what="the valid message")
        told = wait_for(lambda: len(notices(sender, alice)) >= 5 and notices(sender, alice), what="five notices")
        assert [(t, json.loads(p)["id"]) for t, p, *_ in receiver.messages] == [(topic, "good-1")]
        by_id = {notice["id"]: notice for notice in told}
        assert set(by_id) == {None, "big-1", "rel-1", "edit-1", "mp-1"}
        assert all(notice["conversation"] == conversation for notice in told)
        assert by_id[None]["error"].startswith("invalid JSON at line 1")
        assert by_id["big-1"]["error"] == "body is 20000 characters long; the limit is 16384"
        assert "poke" in by_id["rel-1"]["error"]
        assert by_id["edit-1"]["error"] == "only the sender of a message may edit it"
        assert by_id["mp-1"]["error"].startswith('missing "body"')
        # The bridge got none of them either: history holds the valid message only.
        stored = wait_for(lambda: history(stack, alice, alice_pw, conversation), what="the valid message stored")
        assert [message["id"] for message in stored] == ["good-1"]
    finally:
        sender.close()
        receiver.close()


@TRANSPORTS
def test_mqtt5_refusals_carry_a_reason_code_and_a_notice(
    stack: Stack, users: Users, clients: Callable[..., V5Client], websocket: bool
) -> None:
    """paho over TCP or WebSocket (``websocket``); mosquitto_pub over TCP in both runs (it speaks no WebSocket)."""
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    team = users.group("team", [alice, bob])
    port = port_of(stack, websocket)
    receiver = clients(port, user=bob, password=bob_pw, websocket=websocket)
    receiver.connect()
    receiver.subscribe((f"dm/{bob}/+", 1), (f"group/{team}/+", 1))
    sender = clients(port, user=alice, password=alice_pw, websocket=websocket)
    sender.connect()
    sender.subscribe((f"ack/{alice}", 1))
    dm = f"dm/{bob}/{alice}"

    cases = [  # (topic, payload, qos, reason code)
        (dm, b"{not json", 1, 0x99),
        (f"group/{team}/{alice}", b'{"id": "g-1"}', 1, 0x99),  # no body
        (f"dm/nobody-{secrets.token_hex(3)}/{alice}", b'{"id": "x-1", "body": "hi"}', 1, 0x87),
        (f"dm/{bob}/{bob}", b'{"id": "as-bob", "body": "hi"}', 1, 0x87),  # impersonating bob
    ]
    for topic, payload, qos, code in cases:
        reason, properties = sender.publish(topic, payload, qos=qos)
        assert reason.value == code, f"{topic} {payload[:30]!r}: {reason}"
        assert getattr(properties, "ReasonString", ""), "a refusal carries a reason string"
    # A body over the limit, through mosquitto_pub -V mqttv5: 0x99 and the reason string.
    big = json.dumps({"id": "big-2", "body": "y" * 16_385}).encode()
    result = run_mosquitto_pub(stack.mqtt_port, alice, alice_pw, dm, big, extra=("-V", "mqttv5", "-d"))
    assert "received PUBACK (Mid: 1, RC:153)" in result.stdout.decode(), result.stdout.decode()
    assert "body is 16385 characters long; the limit is 16384" in result.stderr.decode()
    assert sender.publish(dm, b'{"id": "fine", "body": "hello"}')[0].value == 0

    first = receiver.message()
    assert (first.topic, json.loads(first.payload)["id"]) == (dm, "fine")
    acks: list[tuple[str, bytes]] = []

    def five_notices() -> list[dict[str, Any]]:
        while not sender.messages.empty():
            got = sender.messages.get()
            acks.append((got.topic, got.payload))
        return notices(acks, alice) if len(notices(acks, alice)) >= 5 else []

    told = wait_for(five_notices, what="five notices on ack/")
    assert sorted(str(n["id"]) for n in told) == sorted(["None", "g-1", "big-2", "x-1", "as-bob"])
    assert receiver.no_message(0.5), "a refused message was delivered"


RATE_REFUSED = 'switchboard_broker_messages_refused_total{reason="rate"}'


def broker_metric(stack: Stack, sample: str) -> float:
    port = int(stack.out.wait_for(r"broker metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"no {sample} in:\n{text}"
    return float(found.group(1))


@TRANSPORTS
def test_over_its_rate_a_user_is_refused_and_others_are_not_slowed(
    door_stack: Stack, door_users: Users, clients: Callable[..., V5Client], websocket: bool
) -> None:
    """The MQTT 5 flooder and receiver are paho over TCP or WebSocket (``websocket``); the 3.1.1 ones TCP."""
    alice, alice_pw = door_users.user("alice")
    carol, carol_pw = door_users.user("carol")
    bob, bob_pw = door_users.user("bob")
    team = door_users.group("team", [alice, bob, carol])
    before = broker_metric(door_stack, RATE_REFUSED)
    port = port_of(door_stack, websocket)
    receiver = clients(port, user=bob, password=bob_pw, websocket=websocket)
    receiver.connect()
    receiver.subscribe((f"group/{team}/+", 1))
    flooder = clients(port, user=alice, password=alice_pw, websocket=websocket)
    flooder.connect()
    flooder.subscribe((f"ack/{alice}", 1))
    # A second connection of the same user shares its bucket (MQTT 3.1.1: PUBACK, no code; a notice).
    second = v3(door_stack.mqtt_port, alice, alice_pw)
    other = v3(door_stack.mqtt_port, carol, carol_pw)
    try:
        flood = [b'{"id": "f-%d", "body": "x"}' % n for n in range(14)]
        codes = [flooder.publish(f"group/{team}/{alice}", payload)[0].value for payload in flood]
        publish(second, f"group/{team}/{alice}", b'{"id": "f-second", "body": "x"}')
        for n in range(3):  # another user, meanwhile: all delivered
            publish(other, f"group/{team}/{carol}", b'{"id": "c-%d", "body": "x"}' % n)

        passed = codes.count(0)
        assert passed in (DOOR_BURST, DOOR_BURST + 1), codes  # one more if 10 s went by
        assert set(codes[passed:]) == {0x97}, codes
        expected = passed + 3
        got = [receiver.message() for _ in range(expected)]
        ids = sorted(json.loads(m.payload)["id"] for m in got)
        assert ids == sorted([f"f-{n}" for n in range(passed)] + ["c-0", "c-1", "c-2"])
        assert receiver.no_message(0.5)
        acks: list[tuple[str, bytes]] = []

        def all_notices() -> list[dict[str, Any]]:
            while not flooder.messages.empty():
                message = flooder.messages.get()
                acks.append((message.topic, message.payload))
            refused = 14 - passed + 1
            return notices(acks, alice) if len(notices(acks, alice)) >= refused else []

        told = wait_for(all_notices, what="a notice per refused message")
        assert {n["id"] for n in told} == {f"f-{n}" for n in range(passed, 14)} | {"f-second"}
        assert all(n["error"].startswith("too many messages") for n in told)
        assert broker_metric(door_stack, RATE_REFUSED) == before + 15 - passed
    finally:
        second.close()
        other.close()


def test_a_service_account_may_publish_on_chat_topics_only_the_unsends_made_through_rest(
    stack: Stack, users: Users
) -> None:
    """The bridge's service account may publish on ``dm/`` (a REST unsend, live): anything else it sends there
    is refused at the door, so a leaked service password cannot speak for a user."""
    bob, bob_pw = users.user("bob")
    alice, _ = users.user("alice")
    bridge, bridge_pw = users.user("bridge", role=Role.SERVICE)
    receiver = v3(stack.mqtt_port, bob, bob_pw, f"dm/{bob}/+")
    service = v3(stack.mqtt_port, bridge, bridge_pw)
    topic = f"dm/{bob}/{alice}"
    unsend = {"id": "unsend-1", "body": "", "relates_to": {"kind": "unsend", "sender": alice, "id": "m-1"}}
    try:
        publish(service, topic, json.dumps({"id": "forged-1", "body": "send me your password"}).encode())
        publish(service, topic, json.dumps(unsend).encode())
        wait_for(lambda: receiver.messages, what="the unsend")
        assert [json.loads(p)["id"] for _, p, *_ in receiver.messages] == ["unsend-1"]
    finally:
        service.close()
        receiver.close()
