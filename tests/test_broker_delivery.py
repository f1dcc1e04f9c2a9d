"""Delivery guarantees of Switchboard's broker, with real clients. Each test names the rule it proves.

Most of these fail on plain amqtt 0.12.1 (upstream #401, #391, #308 and the issues listed in
docs/broker.md).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub
from tests.rawmqtt import PUBACK, PUBCOMP, PUBREC, PUBREL, RawClient

Raw = Callable[[int], RawClient]


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def test_persistent_session_queues_qos1_and_qos2_in_order_with_session_present(
    chat_stack: Stack, chat_users: Users, raw: Raw
) -> None:
    """[MQTT-3.1.2-4], [MQTT-3.1.2-5], [MQTT-3.2.2-2]: subscriptions and QoS 1/2 messages wait for the client."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    client_id = _id("bob-phone")
    phone = raw(chat_stack.mqtt_port)
    assert phone.connect(client_id, bob, bob_pw, clean=False).body == b"\x00\x00"
    assert phone.subscribe((f"dm/{bob}/+", 2)) == [2]
    phone.disconnect()

    for n in range(6):
        payload = json.dumps({"id": f"m{n}", "body": str(n)})
        mosquitto_pub(chat_stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", payload, qos=1 if n % 2 else 2)

    phone = raw(chat_stack.mqtt_port)
    assert phone.connect(client_id, bob, bob_pw, clean=False).body == b"\x01\x00"  # session present
    received = phone.publishes(6)
    assert [json.loads(p.payload)["id"] for p in received] == [f"m{n}" for n in range(6)]
    assert [p.qos for p in received] == [2, 1, 2, 1, 2, 1]  # min(publish QoS, subscription QoS 2)
    assert not any(p.retain for p in received)  # queued messages are not retained messages
    phone.close()


def test_anonymous_persistent_session_queues_too(open_stack: Stack, raw: Raw) -> None:
    """amqtt never kept anonymous sessions; MQTT 3.1.1 makes no such exception [MQTT-3.1.2-4]."""
    client_id, topic = _id("sensor"), f"devices/{_id('d')}/cmd"
    device = raw(open_stack.mqtt_port)
    assert device.connect(client_id, clean=False).body == b"\x00\x00"
    assert device.subscribe((topic, 1)) == [1]
    device.disconnect()
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    for n in range(3):
        sender.publish(topic, f"cmd{n}".encode(), qos=1)
        sender.expect(PUBACK)
    sender.disconnect()
    device = raw(open_stack.mqtt_port)
    assert device.connect(client_id, clean=False).body == b"\x01\x00"
    assert [p.payload for p in device.publishes(3, ack=True)] == [b"cmd0", b"cmd1", b"cmd2"]
    device.close()


def test_full_queue_drops_the_oldest_and_logs_it(open_stack: Stack, raw: Raw) -> None:
    """mqtt.max_queued_messages (5 here): overflow drops the oldest, is logged, never crashes."""
    client_id, topic = _id("slow"), f"q/{_id('t')}"
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    device.subscribe((topic, 1))
    device.disconnect()
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    for n in range(8):
        sender.publish(topic, str(n).encode(), qos=1)
        sender.expect(PUBACK)
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    assert [p.payload for p in device.publishes(5, ack=True)] == [b"3", b"4", b"5", b"6", b"7"]
    open_stack.out.wait_for(rf"queue of client_id={client_id} is full \(5 messages\): dropped the oldest", 10)
    device.close()
    sender.close()


def test_unacked_qos1_is_redelivered_with_dup_after_reconnect_even_after_minutes(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-4.4.0-1], upstream #401/#391: no timer drops an unacknowledged message (amqtt gave up after 5 s)."""
    client_id, topic = _id("forgetful"), f"r/{_id('t')}"
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    device.subscribe((topic, 1))
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    sender.publish(topic, b"important", qos=1)
    first = device.publishes(1)[0]
    assert (first.dup, first.payload) == (False, b"important")
    time.sleep(6)  # longer than amqtt's fixed 5 s PUBACK wait
    device.drop()

    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    again = device.publishes(1)[0]
    assert (again.dup, again.publish_id, again.payload) == (True, first.publish_id, b"important")
    device.ack(PUBACK, again.publish_id or 0)
    device.disconnect()
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    assert device.drain(quiet=1.0) == []  # nothing more is due ...
    sender.publish(topic, b"next", qos=1)
    assert device.publishes(1)[0].payload == b"next"  # ... and the next message is the new one
    device.close()
    sender.close()


def test_qos2_outgoing_flow_completes_exactly_once_across_reconnects(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-4.3.3-1], [MQTT-4.4.0-1]: resume with PUBLISH (DUP) before PUBREC, with PUBREL after it."""
    client_id, topic = _id("q2"), f"q2/{_id('t')}"
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    device.subscribe((topic, 2))
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    sender.publish(topic, b"once", qos=2)
    sender.ack(PUBREL, sender.expect(PUBREC).packet_id)
    sender.expect(PUBCOMP)

    publish = device.publishes(1)[0]
    device.drop()  # state 1: PUBLISH received, PUBREC never sent
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    again = device.publishes(1)[0]
    assert (again.dup, again.publish_id, again.qos) == (True, publish.publish_id, 2)
    device.ack(PUBREC, again.publish_id or 0)
    assert device.expect(PUBREL).packet_id == again.publish_id
    device.drop()  # state 2: PUBREL received, PUBCOMP never sent
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    resumed = device.read(timeout=5)
    assert resumed is not None and resumed.kind == PUBREL and resumed.packet_id == again.publish_id
    device.ack(PUBCOMP, again.publish_id or 0)
    device.disconnect()
    device = raw(open_stack.mqtt_port)
    device.connect(client_id, clean=False)
    sender.publish(topic, b"second", qos=0)
    assert device.publishes(1)[0].payload == b"second"  # "once" is not delivered a third time
    device.close()
    sender.close()


def test_qos2_incoming_is_routed_once_when_the_publisher_resends_after_reconnect(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-4.3.3-2]: a PUBLISH resent with the same packet id before PUBREL is not delivered twice."""
    topic, publisher_id = f"in2/{_id('t')}", _id("pub")
    watcher = raw(open_stack.mqtt_port)
    watcher.connect(_id("watch"))
    watcher.subscribe((topic, 2))
    publisher = raw(open_stack.mqtt_port)
    publisher.connect(publisher_id, clean=False)
    publisher.publish(topic, b"exactly once", qos=2, packet_id=7)
    assert publisher.expect(PUBREC).packet_id == 7
    publisher.drop()
    publisher = raw(open_stack.mqtt_port)
    publisher.connect(publisher_id, clean=False)
    publisher.publish(topic, b"exactly once", qos=2, packet_id=7, dup=True)
    publisher.expect(PUBREC)
    publisher.ack(PUBREL, 7)
    publisher.expect(PUBCOMP)
    publisher.publish(topic, b"marker", qos=0)
    payloads = []
    while not payloads or payloads[-1] != b"marker":
        message = watcher.publishes(1)[0]
        payloads.append(message.payload)
        if message.qos == 2:
            watcher.ack(PUBREC, message.publish_id or 0)
    assert payloads == [b"exactly once", b"marker"]
    watcher.close()
    publisher.close()


def test_inflight_window_holds_back_the_rest_until_acks(open_stack: Stack, raw: Raw) -> None:
    """mqtt.max_inflight (3 here): at most 3 unacknowledged messages, the rest follow in order."""
    topic = f"w/{_id('t')}"
    device = raw(open_stack.mqtt_port)
    device.connect(_id("window"))
    device.subscribe((topic, 1))
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    for n in range(5):
        sender.publish(topic, str(n).encode(), qos=1)
    first = device.publishes(3)
    assert [p.payload for p in first] == [b"0", b"1", b"2"]
    assert device.drain(quiet=0.5) == []
    device.ack(PUBACK, first[0].publish_id or 0)
    assert device.publishes(1)[0].payload == b"3"
    device.close()
    sender.close()


def test_delivered_qos_is_the_minimum_and_overlaps_deliver_one_copy(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-3.3.5-1] and §3.3.5: min(publish, subscription) QoS; one copy at the highest matching QoS."""
    base = f"o/{_id('t')}"
    device = raw(open_stack.mqtt_port)
    device.connect(_id("overlap"))
    assert device.subscribe((f"{base}/#", 0), (f"{base}/+", 2), (f"{base}/x", 1)) == [0, 2, 1]
    sender = raw(open_stack.mqtt_port)
    sender.connect(_id("sender"))
    sender.publish(f"{base}/x", b"two", qos=2)
    sender.publish(f"{base}/x", b"zero", qos=0)
    got = device.publishes(2)
    assert [(p.payload, p.qos) for p in got] == [(b"two", 2), (b"zero", 0)]
    device.ack(PUBREC, got[0].publish_id or 0)
    sender.publish(f"{base}/x", b"end", qos=0)
    assert device.publishes(1)[0].payload == b"end"  # no second copy of "two" came in between
    device.close()
    sender.close()


def test_silent_client_is_disconnected_within_one_and_a_half_keepalives_and_its_will_published(
    open_stack: Stack, raw: Raw
) -> None:
    """[MQTT-3.1.2-24], upstream #308: amqtt never enforced keep-alive, so wills never fired."""
    will_topic = f"status/{_id('dev')}"
    watcher = raw(open_stack.mqtt_port)
    watcher.connect(_id("watch"))
    assert watcher.subscribe((will_topic, 0)) == [0]
    silent = raw(open_stack.mqtt_port)
    silent.connect(_id("silent"), keepalive=2, will=(will_topic, b"gone", 1, False))
    started = time.monotonic()
    assert silent.closed_by_broker(timeout=8)
    assert 2.9 < time.monotonic() - started < 3.0 + 2.0  # 1.5 x 2 s, plus scheduling slack on a busy machine
    assert [p.payload for p in watcher.publishes(1)] == [b"gone"]
    watcher.close()


def test_clean_disconnect_does_not_publish_the_will(open_stack: Stack, raw: Raw) -> None:
    """[MQTT-3.14.4-3]: DISCONNECT discards the will."""
    will_topic = f"status/{_id('dev')}"
    watcher = raw(open_stack.mqtt_port)
    watcher.connect(_id("watch"))
    watcher.subscribe((will_topic, 0))
    polite = raw(open_stack.mqtt_port)
    polite.connect(_id("polite"), will=(will_topic, b"gone", 0, False))
    polite.disconnect()
    rude = raw(open_stack.mqtt_port)
    rude.connect(_id("rude"), will=(will_topic, b"rude gone", 0, False))
    rude.drop()
    assert [p.payload for p in watcher.publishes(1)] == [b"rude gone"]
    watcher.close()


def test_presence_is_online_while_any_device_is_connected(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    """Presence per user: several devices; a clean DISCONNECT updates presence too; silence ends in offline."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    chat_users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    watcher = raw(chat_stack.mqtt_port)
    watcher.connect(_id("w"), bob, bob_pw)
    watcher.subscribe((f"presence/{alice}", 1))

    def statuses(count: int) -> list[str]:
        found = []
        for message in watcher.publishes(count):
            if message.qos:
                watcher.ack(PUBACK, message.publish_id or 0)
            found.append(json.loads(message.payload)["status"])
        return found

    phone = raw(chat_stack.mqtt_port)
    phone_connecting = time.monotonic()  # the phone's CONNECT is its last packet: silent from then on
    phone.connect(_id("phone"), alice, alice_pw, keepalive=2)
    laptop = raw(chat_stack.mqtt_port)
    laptop.connect(_id("laptop"), alice, alice_pw)
    assert statuses(1) == ["online"]
    laptop.disconnect()  # the phone is still connected: no "offline" ...
    assert statuses(1) == ["offline"]  # ... until the phone has been silent for 1.5 x 2 s [MQTT-3.1.2-24]
    assert time.monotonic() - phone_connecting >= 3.0  # not at the laptop's DISCONNECT (a bound, not a timing)
    again = raw(chat_stack.mqtt_port)
    again.connect(_id("again"), alice, alice_pw)
    assert statuses(1) == ["online"]
    again.disconnect()
    assert statuses(1) == ["offline"]

    late = raw(chat_stack.mqtt_port)  # a new subscriber gets the retained presence
    late.connect(_id("late"), bob, bob_pw)
    late.subscribe((f"presence/{alice}", 1))
    retained = late.publishes(1)[0]
    assert retained.retain and json.loads(retained.payload)["status"] == "offline"
    for client in (watcher, phone, late):
        client.close()


def test_retained_messages_go_only_to_matching_allowed_new_subscriptions(
    chat_stack: Stack, chat_users: Users, raw: Raw
) -> None:
    """[MQTT-3.3.1-6], [MQTT-3.3.1-8]; amqtt sent retained messages of other clients' filters without ACL.
    On chat topics only presence is retained (tests/test_broker_facts.py: dm/ and group/ never are)."""
    alice, alice_pw = chat_users.user("alice")
    bob, bob_pw = chat_users.user("bob")
    mallory, mallory_pw = chat_users.user("mallory")
    chat_users.group("friends", [alice, bob, mallory])  # presence goes to those who share a conversation
    device = raw(chat_stack.mqtt_port)
    device.connect(_id("alice"), alice, alice_pw)  # the broker retains presence/{alice} "online"

    snoop = raw(chat_stack.mqtt_port)
    snoop.connect(_id("snoop"), mallory, mallory_pw, clean=False)
    assert snoop.subscribe(("presence/+", 1), (f"dm/{bob}/+", 1)) == [1, 0x80]
    seen = [p.topic for p in snoop.drain()]
    assert f"presence/{alice}" in seen and all(topic.startswith("presence/") for topic in seen)

    inbox = raw(chat_stack.mqtt_port)
    inbox.connect(_id("inbox"), bob, bob_pw)
    inbox.subscribe((f"presence/{alice}", 1))
    message = inbox.publishes(1)[0]
    assert message.retain and json.loads(message.payload)["status"] == "online"

    device.publish(f"presence/{alice}", b"", qos=1, retain=True)  # [MQTT-3.3.1-10]: empty clears it
    device.expect(PUBACK)
    fresh = raw(chat_stack.mqtt_port)
    fresh.connect(_id("fresh"), bob, bob_pw)
    fresh.subscribe((f"presence/{alice}", 1))
    assert [p for p in fresh.drain() if p.retain] == []
    for client in (device, snoop, inbox, fresh):
        client.close()


def test_sys_statistics_are_for_admins_only(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    """$SYS topics: admins read them, others get 0x80, and '#' never matches them [MQTT-4.7.2-1]."""
    from sqlmodel import Session

    from switchboard.tables import Role, User

    admin, admin_pw = chat_users.user("root")
    with Session(chat_users.engine) as session:
        user = session.get(User, admin)
        assert user is not None
        user.role = Role.ADMIN
        session.add(user)
        session.commit()
    alice, alice_pw = chat_users.user("alice")

    boss = raw(chat_stack.mqtt_port)
    boss.connect(_id("boss"), admin, admin_pw)
    assert boss.subscribe(("$SYS/broker/#", 0)) == [0]
    figures = {p.topic: p.payload for p in boss.publishes_for(2.5)}  # retained, then refreshes (every 1 s)
    assert int(figures["$SYS/broker/clients/connected"]) >= 2  # the bridge and this admin
    assert {"$SYS/broker/messages/received", "$SYS/broker/messages/queued", "$SYS/broker/version"} <= set(figures)

    nosy = raw(chat_stack.mqtt_port)
    nosy.connect(_id("nosy"), alice, alice_pw)
    assert nosy.subscribe(("$SYS/#", 0), ("$SYS/broker/uptime", 0)) == [0x80, 0x80]
