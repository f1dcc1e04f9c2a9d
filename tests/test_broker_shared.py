"""Shared subscriptions ``$share/{group}/{filter}`` on Switchboard's own broker, with real clients.

MQTT 5 section 4.8.2 defines them; Mosquitto and EMQX offer them to MQTT 3.1.1 clients, and so does this
broker: each matching message goes to one member of each share group, and to every ordinary subscriber.
Before shared subscriptions were built, the ACL refused every ``$share/...`` filter (a ``$`` topic) and the
hub had no notion of a group, so each test below failed.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from switchboard.tables import Role
from tests.conftest import OPEN_LIMITS, Users
from tests.deploy import Deployment, Publisher
from tests.helpers import PahoClient, Stack, service_metric, start_stack, wait_for
from tests.rawmqtt import PUBACK, PUBCOMP, PUBREC, PUBREL, RawClient

Raw = Callable[[int], RawClient]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(params=["switchboard", "mosquitto"])
def port(request: pytest.FixtureRequest, open_stack: Stack) -> int:
    """The port of Switchboard's broker (anonymous, small limits), or of Mosquitto for the same test."""
    if request.param == "mosquitto":
        return int(request.getfixturevalue("mosquitto"))
    return open_stack.mqtt_port


def _payloads(client: PahoClient) -> list[bytes]:
    return [payload for _topic, payload, _qos, _dup in list(client.messages)]


def test_each_message_reaches_one_member_of_each_group_and_every_ordinary_subscriber(port: int, raw: Raw) -> None:
    """MQTT 5 §4.8.2: one member of each share group gets a message; ordinary subscriptions are unaffected.
    The same on Mosquitto."""
    base = _id("sh")
    members = {name: PahoClient(port, _id(name), None, None, clean=True) for name in ("a1", "a2", "b1", "plain")}
    for client in members.values():
        assert client.connect() == "Success"
    for name in ("a1", "a2"):
        assert members[name].subscribe(f"$share/ga/{base}/+/+", 1) == [1]
    assert members["b1"].subscribe(f"$share/gb/{base}/#", 1) == [1]
    assert members["plain"].subscribe(f"{base}/+/+", 1) == [1]

    sender = raw(port)
    sender.connect(_id("sender"))
    count = 40
    for n in range(count):
        sender.publish(f"{base}/x/{n % 3}", f"m{n}".encode(), qos=1)
        sender.expect(PUBACK)
        # Paced by the slowest subscriber: the stack's queues hold 3 + 5 messages, so a burst could overflow one.
        wait_for(lambda n=n: min(len(_payloads(members[k])) for k in ("b1", "plain")) > n, what=f"m{n} delivered")
    expected = sorted(f"m{n}".encode() for n in range(count))
    wait_for(lambda: len(_payloads(members["plain"])) >= count, what="the ordinary subscriber's messages")
    wait_for(lambda: len(_payloads(members["b1"])) >= count, what="group gb's messages")
    wait_for(lambda: len(_payloads(members["a1"])) + len(_payloads(members["a2"])) >= count, what="group ga's messages")
    time.sleep(0.5)  # nothing more may come
    a1, a2 = _payloads(members["a1"]), _payloads(members["a2"])
    assert sorted(a1 + a2) == expected  # each message to exactly one member of ga
    assert a1 and a2  # both members took part (round robin: about half each)
    assert sorted(_payloads(members["b1"])) == expected  # a second group gets every message once too
    assert sorted(_payloads(members["plain"])) == expected  # and so does an ordinary subscriber
    for client in members.values():
        client.close()


def test_offline_members_are_skipped_while_one_is_connected_and_queued_for_when_none_is(
    open_stack: Stack, raw: Raw
) -> None:
    """A persistent member that is offline gets nothing while another member is connected; with nobody
    connected, QoS 1 messages are queued for a persistent member (as Mosquitto does) and QoS 0 ones dropped.
    (Mosquitto 2.0.11 does not skip the offline member: it queues every other message for it.)"""
    topic = _id("off")
    share = f"$share/g/{topic}"
    sleeper_id = _id("sleeper")
    sleeper = raw(open_stack.mqtt_port)
    sleeper.connect(sleeper_id, clean=False)
    assert sleeper.subscribe((share, 1)) == [1]
    sleeper.disconnect()
    awake = raw(open_stack.mqtt_port)
    awake.connect(_id("awake"))
    assert awake.subscribe((share, 1)) == [1]
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    for n in range(3):
        sender.publish(topic, f"live {n}".encode(), qos=1)
        sender.expect(PUBACK)
    assert [p.payload for p in awake.publishes(3, ack=True)] == [b"live 0", b"live 1", b"live 2"]
    awake.disconnect()  # a clean session: it leaves the group

    sender.publish(topic, b"lost: qos 0, nobody connected", qos=0)
    for n in range(2):
        sender.publish(topic, f"queued {n}".encode(), qos=1)
        sender.expect(PUBACK)
    sleeper = raw(open_stack.mqtt_port)
    assert sleeper.connect(sleeper_id, clean=False).body == b"\x01\x00"
    assert [p.payload for p in sleeper.drain()] == [b"queued 0", b"queued 1"]


def test_qos1_in_flight_and_queued_go_to_another_member_when_theirs_goes_away(open_stack: Stack, raw: Raw) -> None:
    """MQTT 5 §4.8.2: QoS 1 messages a member did not acknowledge, and those queued beyond its window
    (mqtt.max_inflight is 3 here), are given to another member when it goes away, clean session or not.
    (Mosquitto 2.0.11 does not: a clean member's in-flight messages are lost with it.)"""
    for clean in (True, False):
        topic = _id("away")
        share = f"$share/workers/{topic}/+"
        first_id = _id("first")
        first = raw(open_stack.mqtt_port)
        first.connect(first_id, clean=clean)
        assert first.subscribe((share, 1)) == [1]
        sender = raw(open_stack.mqtt_port)
        sender.connect(_id("sender"))
        for n in range(5):
            sender.publish(f"{topic}/job", f"job {n}".encode(), qos=1)
            sender.expect(PUBACK)
        held = first.publishes(3)  # the window: received, never acknowledged; two more wait in its queue
        assert [p.payload for p in held] == [b"job 0", b"job 1", b"job 2"]
        second = raw(open_stack.mqtt_port)
        second.connect(_id("second"))
        assert second.subscribe((share, 1)) == [1]
        first.drop()  # the network died under it
        taken = second.publishes(5, ack=True)
        assert sorted(p.payload for p in taken) == [f"job {n}".encode() for n in range(5)]
        assert not any(p.dup for p in taken)  # a first delivery to this client
        assert second.drain() == []
        if not clean:  # the persistent member comes back: what another member took is not sent twice
            first = raw(open_stack.mqtt_port)
            assert first.connect(first_id, clean=False).body == b"\x01\x00"
            assert first.drain() == []
            first.disconnect()
        open_stack.out.wait_for(rf"client_id={first_id} left 5 message\(s\) of shared subscriptions: 5 handed", 10)
        second.disconnect()
        sender.disconnect()


def test_qos2_in_flight_stays_with_its_member(port: int, raw: Raw) -> None:
    """[MQTT-4.8.2-4]: a QoS 2 message in flight is completed with the member it was sent to when it comes
    back, and never given to another member [MQTT-4.8.2-5] (the first may have passed it on already).
    The same on Mosquitto."""
    topic = _id("q2")
    share = f"$share/g/{topic}"
    first_id = _id("first")
    first = raw(port)
    first.connect(first_id, clean=False)
    assert first.subscribe((share, 2)) == [2]
    sender = raw(port)
    sender.connect(_id("sender"))
    sender.publish(topic, b"exactly once", qos=2)
    sender.ack(PUBREL, sender.expect(PUBREC).packet_id)
    sender.expect(PUBCOMP)
    sent = first.publishes(1)[0]
    second = raw(port)
    second.connect(_id("second"))
    assert second.subscribe((share, 2)) == [2]
    first.drop()
    assert second.drain(quiet=1.5) == []
    first = raw(port)
    assert first.connect(first_id, clean=False).body == b"\x01\x00"
    again = first.publishes(1)[0]
    assert (again.payload, again.dup, again.publish_id) == (b"exactly once", True, sent.publish_id)
    first.ack(PUBREC, again.publish_id or 0)
    first.ack(PUBCOMP, first.expect(PUBREL).packet_id)
    first.disconnect()


def test_unsubscribe_leaves_the_share_group(port: int, raw: Raw) -> None:
    """The same on Mosquitto."""
    topic = _id("unsub")
    share = f"$share/g/{topic}"
    stayer, leaver = raw(port), raw(port)
    for client in (stayer, leaver):
        client.connect(_id("member"))
        assert client.subscribe((share, 1)) == [1]
    assert leaver.unsubscribe(share)
    sender = raw(port)
    sender.connect(_id("sender"))
    for n in range(4):
        sender.publish(topic, f"m{n}".encode(), qos=1)
        sender.expect(PUBACK)
    assert [p.payload for p in stayer.publishes(4, ack=True)] == [b"m0", b"m1", b"m2", b"m3"]
    assert leaver.drain() == []


def test_malformed_share_names_are_refused_with_a_log_line(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-4.8.2-1, MQTT-4.8.2-2]: a group name of at least one character, without ``/``, ``+`` or ``#``,
    then a topic filter. SUBACK 0x80 for each bad one; the connection stays open. (Mosquitto 2.0.11 takes
    ``$share//x``, ``$share/g`` and ``$share/+/x`` as ordinary filters and closes the connection on
    ``$share/g+/x``.)"""
    client = raw(open_stack.mqtt_port)
    client_id = _id("bad-share")
    client.connect(client_id)
    bad = ["$share//x", "$share/g", "$share/g/", "$share/+/x", "$share/g#/x", "$share/g+/x", "$share/g/x/#/y"]
    assert client.subscribe(*[(name, 1) for name in bad]) == [0x80] * len(bad)
    for name in bad:
        open_stack.out.wait_for(rf"refused subscription of client_id={client_id} to {re.escape(repr(name))}: ", 10)
    open_stack.out.wait_for(r"write \$share/\{group\}/\{filter\}, with a group name that is not empty", 10)
    assert client.subscribe((f"$share/g/{_id('ok')}", 1)) == [1]  # still connected, still served


def test_a_new_shared_subscription_gets_no_retained_messages(open_stack: Stack, raw: Raw) -> None:
    """MQTT 5 §3.3.1.3 sends retained messages on a new non-shared subscription only (each member would
    otherwise get its own copy); Mosquitto 2.0.11 sends them to members too."""
    topic = _id("kept")
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    sender.publish(topic, b"state", qos=1, retain=True)
    sender.expect(PUBACK)
    member, plain = raw(open_stack.mqtt_port), raw(open_stack.mqtt_port)
    member.connect(_id("member"))
    plain.connect(_id("plain"))
    assert member.subscribe((f"$share/g/{topic}", 1)) == [1]
    assert plain.subscribe((topic, 1)) == [1]
    assert [p.payload for p in plain.publishes(1, ack=True)] == [b"state"]
    assert member.drain() == []
    sender.publish(topic, b"", qos=1, retain=True)  # clear it
    sender.expect(PUBACK)


def test_acl_is_decided_on_the_filter(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    """A user may join a share group only for a filter it may subscribe to; a service account may share
    ``dm/#``; each delivery still passes the receive check."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    service, service_pw = chat_users.user("svc", role=Role.SERVICE)
    phone = raw(chat_stack.mqtt_port)
    phone.connect(_id("bob-phone"), bob, bob_pw)
    assert phone.subscribe((f"$share/phones/dm/{bob}/+", 1)) == [1]
    thief = raw(chat_stack.mqtt_port)
    thief.connect(_id("alice-phone"), alice, alice_pw)
    assert thief.subscribe((f"$share/phones/dm/{bob}/+", 1), ("$share/all/dm/#", 1)) == [0x80, 0x80]
    chat_stack.out.wait_for(rf"denied subscribe: client_id=\S+ user={alice} topic='\$share/phones/dm/{bob}/\+'", 10)
    workers = raw(chat_stack.mqtt_port)
    workers.connect(_id("svc"), service, service_pw)
    assert workers.subscribe((f"$share/{_id('svc')}/dm/{bob}/#", 1)) == [1]

    thief.publish(f"dm/{bob}/{alice}", json.dumps({"id": "m1", "body": "hi"}).encode(), qos=1)
    thief.expect(PUBACK)
    assert [p.topic for p in phone.publishes(1, ack=True)] == [f"dm/{bob}/{alice}"]
    assert [p.topic for p in workers.publishes(1, ack=True)] == [f"dm/{bob}/{alice}"]
    assert thief.drain() == []


def test_shared_subscriptions_and_their_messages_survive_a_restart(tmp_path: Path, raw: Raw) -> None:
    """Persistent members keep their shared subscriptions in the state file (mqtt.state_file), and a message
    in flight to one of them still goes to another member after the restart when its member goes away."""
    url = f"sqlite:///{tmp_path}/shared.db"
    topic = _id("persist")
    share = f"$share/g/{topic}"
    ids = [_id("m1"), _id("m2")]
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    try:
        members = [raw(stack.mqtt_port) for _ in ids]
        for client, client_id in zip(members, ids, strict=True):
            client.connect(client_id, clean=False)
            assert client.subscribe((share, 1)) == [1]
        members[1].disconnect()  # offline: the message goes to the connected member
        sender = raw(stack.mqtt_port)
        sender.connect(_id("sender"))
        sender.publish(topic, b"in flight", qos=1)
        sender.expect(PUBACK)
        assert members[0].publishes(1)[0].payload == b"in flight"  # never acknowledged
        members[0].drop()
    finally:
        stack.stop(signal.SIGKILL)

    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    try:
        # the two members and the stack's bridge
        stack.out.wait_for(r"restored 3 persistent session\(s\), 1 queued message\(s\)", 10)
        second = raw(stack.mqtt_port)
        assert second.connect(ids[1], clean=False).body == b"\x01\x00"
        first = raw(stack.mqtt_port)
        assert first.connect(ids[0], clean=False).body == b"\x01\x00"
        again = first.publishes(1)[0]  # resent to its member, as any in-flight message
        assert (again.payload, again.dup) == (b"in flight", True)
        first.drop()  # ... which goes away again: the other member takes it over
        assert [p.payload for p in second.publishes(1, ack=True)] == [b"in flight"]
        sender = raw(stack.mqtt_port)
        sender.connect(_id("sender"))
        sender.publish(topic, b"after restart", qos=1)
        sender.expect(PUBACK)
        assert [p.payload for p in second.publishes(1, ack=True)] == [b"after restart"]  # still a member
        port = int(stack.out.wait_for(r"broker metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
        assert re.search(r"^switchboard_broker_share_groups 1\.0$", text, re.MULTILINE)
        assert re.search(r"^switchboard_broker_shared_handed_over_total 1\.0$", text, re.MULTILINE)
    finally:
        assert stack.stop() == 0, stack.output()


def test_two_bridges_on_one_shared_subscription_store_everything_once(postgres_deployment: Deployment) -> None:
    """Issue 14 item 5: two bridges sharing ``$share/switchboard/...`` on Switchboard's own broker, on
    Postgres, store 3,000 messages from two senders exactly once and gapless, both taking part."""
    d = postgres_deployment
    users = dict(d.user(name) for name in ("alice", "bob", "carol"))
    d.start_broker()
    shared = {"SWITCHBOARD_BRIDGE__SHARED_GROUP": "switchboard"}
    bridges = [d.start_bridge(**shared, SWITCHBOARD_BRIDGE__CLIENT_ID=f"bridge-{n}") for n in (1, 2)]
    for bridge in bridges:
        bridge.out.wait_for("bridge: connected", 60)
    senders = {name: Publisher(d.port, name, users[name]) for name in ("alice", "carol")}
    per_sender = 1500
    infos = []

    def send(name: str) -> None:
        for round_ in range(per_sender // 100):
            payloads = [json.dumps({"id": f"{name}-{round_}-{n}", "body": "x"}).encode() for n in range(100)]
            infos.extend(senders[name].publish(f"dm/bob/{name}", payloads))

    threads = [threading.Thread(target=send, args=(name,)) for name in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Publisher.wait_acked(infos)
    for conversation in ("dm:alice:bob", "dm:bob:carol"):
        d.wait_stored(conversation, per_sender)
    time.sleep(1)  # nothing more may come
    for conversation, name in (("dm:alice:bob", "alice"), ("dm:bob:carol", "carol")):
        rows = d.stored(conversation)
        assert [seq for seq, _ in rows] == list(range(1, per_sender + 1))  # gapless, no repeats
        assert sorted(msg_id for _, msg_id in rows) == sorted(
            f"{name}-{r}-{n}" for r in range(per_sender // 100) for n in range(100)
        )  # every message exactly once (order across two bridges is not promised)
    shares = [service_metric(bridge, "switchboard_bridge_stored_total") for bridge in bridges]
    assert sum(shares) == 2 * per_sender and all(share > 0 for share in shares), shares  # both took part
    for sender in senders.values():
        sender.close()


def test_a_bridge_killed_mid_stream_leaves_nothing_behind(postgres_deployment: Deployment) -> None:
    """One of two bridges on a shared subscription dies (kill -9) while messages flow and does not come back:
    what it had not acknowledged (in flight or queued) goes to the other bridge, and later messages skip
    its offline session, so everything is stored once, gapless. (Mosquitto 2.0.11 would keep queueing every
    other message for the dead bridge's persistent session until it returned.)"""
    d = postgres_deployment
    users = dict(d.user(name) for name in ("alice", "bob"))
    d.start_broker()
    shared = {"SWITCHBOARD_BRIDGE__SHARED_GROUP": "switchboard"}
    bridges = [d.start_bridge(**shared, SWITCHBOARD_BRIDGE__CLIENT_ID=f"bridge-{n}") for n in (1, 2)]
    for bridge in bridges:
        bridge.out.wait_for("bridge: connected", 60)
    sender = Publisher(d.port, "alice", users["alice"])
    payloads = [json.dumps({"id": f"m{n:04d}", "body": "x"}).encode() for n in range(1000)]
    infos = sender.publish("dm/bob/alice", payloads[:500])
    wait_for(lambda: len(d.stored("dm:alice:bob")) >= 50, timeout=60, what="the bridges to start storing")
    bridges[1].stop(signal.SIGKILL)
    infos += sender.publish("dm/bob/alice", payloads[500:])
    Publisher.wait_acked(infos)
    d.wait_stored("dm:alice:bob", 1000)
    time.sleep(1)  # nothing more may come
    rows = d.stored("dm:alice:bob")
    assert [seq for seq, _ in rows] == list(range(1, 1001))
    # (In the runs here the broker handed 100-odd unacknowledged messages of bridge-2 to bridge-1, logged as
    # "client_id=bridge-2 left N message(s) of shared subscriptions: N handed to other members, 0 lost".)
    assert sorted(msg_id for _, msg_id in rows) == [f"m{n:04d}" for n in range(1000)]
    sender.close()


def test_a_persistent_members_messages_survive_a_graceful_shutdown(tmp_path: Path, raw: Raw) -> None:
    """At shutdown every member goes away at once: a persistent member keeps its unacknowledged shared messages
    (saved in mqtt.state_file and resent after the restart) instead of handing them to a clean member that is
    closing too and would lose them."""
    url = f"sqlite:///{tmp_path}/shutdown.db"
    topic = _id("stop")
    share = f"$share/g/{topic}"
    keeper_id = _id("keeper")
    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    try:
        keeper = raw(stack.mqtt_port)
        keeper.connect(keeper_id, clean=False)
        assert keeper.subscribe((share, 1)) == [1]
        sender = raw(stack.mqtt_port)
        sender.connect(_id("sender"))
        for n in range(2):
            sender.publish(topic, f"held {n}".encode(), qos=1)
            sender.expect(PUBACK)
        assert [p.payload for p in keeper.publishes(2)] == [b"held 0", b"held 1"]  # never acknowledged
        for _ in range(4):  # clean members, connected while the broker stops
            member = raw(stack.mqtt_port)
            member.connect(_id("clean"))
            assert member.subscribe((share, 1)) == [1]
    finally:
        assert stack.stop() == 0, stack.output()
    assert "handed to other members" not in stack.output()

    stack = start_stack(url, tmp_path, **OPEN_LIMITS)
    try:
        keeper = raw(stack.mqtt_port)
        assert keeper.connect(keeper_id, clean=False).body == b"\x01\x00"
        again = keeper.publishes(2, ack=True)
        assert [(p.payload, p.dup) for p in again] == [(b"held 0", True), (b"held 1", True)]
    finally:
        assert stack.stop() == 0, stack.output()
