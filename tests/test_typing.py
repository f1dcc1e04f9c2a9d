"""Typing indicators on ``typing/{conversation}/{from}``: QoS 0 to whoever is connected now, only as
yourself, only in your conversations, never retained, queued or stored."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from sqlmodel import Session, select

from switchboard import accounts
from switchboard.db import make_engine
from switchboard.tables import Message, RejectedMessage
from switchboard.topics import dm_conversation, typing_topic
from tests.conftest import Users
from tests.helpers import MosquittoSub, Stack, mosquitto_pub, run_mosquitto_pub
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]
SUBACK_FAILURE = 0x80


def _client(raw: Raw, stack: Stack, user: tuple[str, str], clean: bool = True) -> RawClient:
    client = raw(stack.mqtt_port)
    client.connect(f"{user[0]}-{secrets.token_hex(3)}", *user, clean=clean)
    return client


def test_typing_reaches_the_other_side_at_qos_0_and_is_never_kept(
    chat_stack: Stack, chat_users: Users, raw: Raw
) -> None:
    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    conversation = dm_conversation(alice[0], bob[0])
    topic = typing_topic(conversation, alice[0])
    watcher = _client(raw, chat_stack, bob)
    assert watcher.subscribe((f"typing/{conversation}/+", 1)) == [1]

    # alice's app sends QoS 1 with retain: bob still gets it at QoS 0, not retained
    typist = _client(raw, chat_stack, alice)
    typist.publish(topic, b'{"typing": true}', qos=1, retain=True)
    (got,) = watcher.publishes(1)
    assert (got.topic, got.payload, got.qos, got.retain) == (topic, b'{"typing": true}', 0, False)

    late = _client(raw, chat_stack, bob)
    assert late.subscribe((f"typing/{conversation}/+", 0)) == [0]
    assert late.drain() == []  # nothing retained

    # an offline persistent session gets nothing queued
    client_id = f"bob-phone-{secrets.token_hex(3)}"
    phone = raw(chat_stack.mqtt_port)
    phone.connect(client_id, *bob, clean=False)
    assert phone.subscribe((f"typing/{conversation}/+", 1)) == [1]
    phone.drop()
    typist.publish(topic, b'{"typing": false}', qos=1)
    watcher.publishes(1)  # delivered to the connected one, so it went through
    phone = raw(chat_stack.mqtt_port)
    assert phone.connect(client_id, *bob, clean=False).body == b"\x01\x00"
    assert phone.drain() == []

    # and the bridge never stores it, nor counts it as a bad message
    time.sleep(1)
    engine = make_engine(chat_stack.database_url)
    with Session(engine) as session:
        assert session.exec(select(Message).where(Message.topic == topic)).all() == []
        assert session.exec(select(RejectedMessage).where(RejectedMessage.topic == topic)).all() == []
    engine.dispose()


def test_typing_only_as_yourself_and_only_in_your_conversations(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    alice, bob, mallory = chat_users.user("alice"), chat_users.user("bob"), chat_users.user("mallory")
    conversation = dm_conversation(alice[0], bob[0])
    watcher = _client(raw, chat_stack, bob)
    assert watcher.subscribe((f"typing/{conversation}/+", 0)) == [0]

    mosquitto_pub(chat_stack.mqtt_port, *mallory, typing_topic(conversation, mallory[0]), "{}", qos=0)
    mosquitto_pub(chat_stack.mqtt_port, *alice, typing_topic(conversation, bob[0]), "{}", qos=0)  # as bob
    assert watcher.drain() == []

    snoop = _client(raw, chat_stack, mallory)
    assert (
        snoop.subscribe(
            (f"typing/{conversation}/+", 0), ("typing/+/+", 0), ("typing/#", 0), (f"typing/{conversation}/#", 0)
        )
        == [SUBACK_FAILURE] * 4
    )
    # mosquitto_pub into a group alice is not in: acknowledged and dropped, as any refused PUBLISH in 3.1.1
    refused = run_mosquitto_pub(chat_stack.mqtt_port, *alice, typing_topic("group:nowhere", alice[0]), "{}", qos=1)
    assert refused.returncode == 0
    assert watcher.drain() == []


def test_typing_in_a_group_stops_reaching_a_removed_member(chat_stack: Stack, chat_users: Users, raw: Raw) -> None:
    alice, bob, carol = chat_users.user("alice"), chat_users.user("bob"), chat_users.user("carol")
    group = chat_users.group("team", [alice[0], bob[0], carol[0]])
    conversation = f"group:{group}"
    watchers = {
        name: MosquittoSub(chat_stack.mqtt_port, *user, f"typing/{conversation}/+", qos=0)
        for name, user in (("bob", bob), ("carol", carol))
    }
    try:
        for watcher in watchers.values():
            assert watcher.granted() == [0]
        mosquitto_pub(chat_stack.mqtt_port, *alice, typing_topic(conversation, alice[0]), "one", qos=0)
        for watcher in watchers.values():
            assert watcher.wait_messages(1) == [(typing_topic(conversation, alice[0]), "one")]

        engine = make_engine(chat_stack.database_url)
        with Session(engine) as session:
            accounts.remove_member(session, group, carol[0])
            session.commit()
        engine.dispose()
        time.sleep(1.5)  # the broker applies directory events within mqtt.directory_poll_seconds (0.5 s)
        mosquitto_pub(chat_stack.mqtt_port, *alice, typing_topic(conversation, alice[0]), "two", qos=0)
        assert watchers["bob"].wait_messages(2)[1] == (typing_topic(conversation, alice[0]), "two")
        time.sleep(0.5)
        assert len(watchers["carol"].messages()) == 1
    finally:
        for watcher in watchers.values():
            watcher.close()
