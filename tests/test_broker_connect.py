"""CONNECT handling (broker/connection.py): credentials are checked before any session is touched.

amqtt 0.12.1 deleted a clean_session=1 client's stored session, and took over a connected client with the
same id, before authenticating. These tests fail on plain amqtt and pass on Switchboard's broker.
"""

from __future__ import annotations

import json

from tests.conftest import Users
from tests.helpers import MosquittoSub, PahoClient, Stack, mosquitto_pub, wait_for


def test_bad_credentials_cannot_kick_a_connected_client(stack: Stack, users: Users) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    phone = PahoClient(stack.mqtt_port, f"{bob}-phone", bob, bob_pw, clean=False)
    assert phone.connect() == "Success"
    assert phone.subscribe(f"dm/{bob}/+") == [1]

    intruder = PahoClient(stack.mqtt_port, f"{bob}-phone", bob, "guessed", clean=True)
    assert intruder.connect() == "Not authorized"
    intruder.close()
    anonymous = PahoClient(stack.mqtt_port, f"{bob}-phone", None, None, clean=True)
    assert anonymous.connect() == "Not authorized"
    anonymous.close()

    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "still there?")
    wait_for(lambda: phone.messages, what="bob's phone to keep receiving")
    assert not phone.disconnected.is_set()
    phone.close()


def test_client_id_of_another_users_session_is_rejected_and_session_survives(stack: Stack, users: Users) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    mallory, mallory_pw = users.user("mallory")
    client_id = f"{bob}-laptop"
    laptop = PahoClient(stack.mqtt_port, client_id, bob, bob_pw, clean=False)
    assert laptop.connect() == "Success"
    assert laptop.subscribe(f"dm/{bob}/+") == [1]
    laptop.close()

    # [MQTT-3.2.2-5]-style refusal: CONNACK 0x02, identifier rejected, and nothing of bob's session is touched.
    thief = PahoClient(stack.mqtt_port, client_id, mallory, mallory_pw, clean=True)
    assert thief.connect() == "Client identifier not valid"
    thief.close()

    mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", json.dumps({"id": "q1", "body": "queued"}))
    back = PahoClient(stack.mqtt_port, client_id, bob, bob_pw, clean=False)
    assert back.connect() == "Success"
    assert back.session_present
    topic, payload, _, _ = wait_for(lambda: back.messages, what="the queued message")[0]
    assert (topic, json.loads(payload)["id"]) == (f"dm/{bob}/{alice}", "q1")
    back.close()


def test_will_must_be_own_presence_and_presence_goes_offline_on_abrupt_disconnect(stack: Stack, users: Users) -> None:
    import signal

    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")
    for topic in (f"dm/{bob}/{alice}", f"presence/{bob}"):
        forger = PahoClient(stack.mqtt_port, f"{alice}-forger", alice, alice_pw, clean=True)
        forger.client.will_set(topic, b"forged")
        assert forger.connect() == "Not authorized", topic
        forger.close()

    users.group("friends", [alice, bob])  # presence goes to those who share a conversation
    watcher = MosquittoSub(stack.mqtt_port, bob, bob_pw, f"presence/{alice}")
    assert watcher.granted() == [1]
    will = '{"status": "offline"}'
    device = MosquittoSub(
        stack.mqtt_port,
        alice,
        alice_pw,
        f"dm/{alice}/+",
        extra=("--will-topic", f"presence/{alice}", "--will-payload", will, "--will-qos", "1"),
    )
    assert device.granted() == [1]
    device.process.send_signal(signal.SIGKILL)  # the network dies: no DISCONNECT, so the will fires
    device.close()
    # The broker owns presence: the will on one's own presence topic is replaced by the broker's offline.
    statuses = [json.loads(payload)["status"] for _, payload in watcher.wait_messages(2)]
    assert statuses == ["online", "offline"]
    watcher.close()
