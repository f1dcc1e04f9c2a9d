"""MQTT 5 on Switchboard's broker, part 2: DISCONNECT both ways, flow control and sizes, message expiry, will
delay, subscription options, what the broker refuses; with paho-mqtt 2.x and raw bytes where a client library
would refuse to send them. Part 1 (CONNECT, PUBLISH, SUBSCRIBE) is tests/test_broker_mqtt5.py."""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.v5 import interval_left
from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import Stack, wait_for
from tests.mqtt5 import (
    OVER_TCP_AND_WS,
    SWITCHBOARD_OVER_TCP_AND_WS,
    TRANSPORTS,
    V5Client,
    new_topic,
    port_of,
    props,
    raw_connect,
)
from tests.rawmqtt import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    RawClient,
    packet,
)

Raw = Callable[[int], RawClient]
SESSION_TAKEN_OVER, KEEP_ALIVE_TIMEOUT, MALFORMED = 0x8E, 0x8D, 0x81


# DISCONNECT -------------------------------------------------------------------------------------------


@SWITCHBOARD_OVER_TCP_AND_WS
def test_takeover_sends_disconnect_0x8E_MQTT_3_1_4_3(v5_port: int, clients: Callable[..., V5Client]) -> None:
    client_id = f"taken-{secrets.token_hex(3)}"
    old = clients(v5_port, client_id)
    old.connect()
    old.client.reconnect_delay_set(60, 120)  # stay away once thrown out
    clients(v5_port, client_id).connect()
    reason, _props = old.disconnects.get(timeout=20)
    assert reason.value == SESSION_TAKEN_OVER


@SWITCHBOARD_OVER_TCP_AND_WS
def test_keep_alive_timeout_sends_disconnect_0x8D_MQTT_3_1_2_22(v5_port: int, raw: Raw) -> None:
    client = raw(v5_port)
    client.send(raw_connect(f"silent-{secrets.token_hex(3)}", keepalive=1))
    assert client.expect(CONNACK).body[1] == 0
    got = client.expect(DISCONNECT, timeout=20)
    assert got.body[0] == KEEP_ALIVE_TIMEOUT


@SWITCHBOARD_OVER_TCP_AND_WS
def test_malformed_property_gets_disconnect_0x81_MQTT_1_5_4_1(v5_port: int, raw: Raw) -> None:
    """A PUBLISH whose Content Type is ill-formed UTF-8: DISCONNECT 0x81, then the connection closes."""
    client = raw(v5_port)
    client.send(raw_connect(f"bad-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    bad_props = b"\x05\x03\x00\x02\xff\xfe"
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + bad_props + b"payload"))
    got = client.expect(DISCONNECT)
    assert got.body[0] == MALFORMED
    assert client.read(10) is None


@OVER_TCP_AND_WS
def test_disconnect_with_will_publishes_the_will_MQTT_3_14_2(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """DISCONNECT reason 0x04 "disconnect with will message" publishes the will; a normal DISCONNECT does not
    [MQTT-3.14.4-3]."""
    topic = new_topic()
    watcher = clients(v5_port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    for reason, expected in ((0x00, None), (0x04, b"gone")):
        leaving = clients(v5_port)
        leaving.client.will_set(topic, b"gone", qos=1)
        leaving.connect()
        leaving.disconnect(reason)
        if expected is None:
            assert watcher.no_message(1.0)
        else:
            assert watcher.message().payload == expected


# Flow control and sizes -------------------------------------------------------------------------------


def _raw_subscribe(client: RawClient, topic_filter: str, options: int) -> bytes:
    body = b"\x00\x01" + b"\x00" + struct.pack("!H", len(topic_filter)) + topic_filter.encode() + bytes((options,))
    client.send(packet(SUBSCRIBE, 2, body))
    return client.expect(SUBACK).body


@OVER_TCP_AND_WS
def test_receive_maximum_bounds_unacknowledged_messages_MQTT_3_3_4_9(
    v5_port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """A client with Receive Maximum 1 gets its next QoS 1 message only after it acknowledged the last one."""
    topic = new_topic()
    client = raw(v5_port)
    client.send(raw_connect(f"slow-{secrets.token_hex(3)}", properties=b"\x03\x21\x00\x01"))
    assert client.expect(CONNACK).body[1] == 0
    assert _raw_subscribe(client, topic, 1)[-1] == 1
    publisher = clients(v5_port)
    publisher.connect()
    for index in range(3):
        publisher.publish(topic, f"m{index}".encode(), 1)
    first = client.expect(PUBLISH)
    with pytest.raises(TimeoutError):
        client.read(1.0)  # the second waits for the first's PUBACK
    for index in range(1, 3):
        assert first.publish_id is not None
        client.ack(PUBACK, first.publish_id)
        first = client.expect(PUBLISH)
        assert first.body.endswith(f"m{index}".encode())


@OVER_TCP_AND_WS
def test_message_over_the_clients_maximum_packet_size_is_not_sent_MQTT_3_1_2_25(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """A message larger than the client's Maximum Packet Size is discarded for it, as if delivered; the next
    one that fits arrives."""
    topic = new_topic()
    small = clients(v5_port)
    small.connect(properties=props(PacketTypes.CONNECT, MaximumPacketSize=200))
    small.subscribe((topic, 1))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"x" * 500, 1)
    publisher.publish(topic, b"fits", 1)
    assert small.message().payload == b"fits"


# Message expiry ---------------------------------------------------------------------------------------


def test_forwarded_expiry_is_never_more_than_what_is_left_MQTT_3_3_2_6() -> None:
    """The forwarded Message Expiry Interval is the received one minus the time waited [MQTT-3.3.2-6], rounded
    down to whole seconds (3597.2 s left goes as 3597, not 3598); in its last second 1, the least that still means
    "expires"; nothing once expired [MQTT-3.3.2-5]."""
    now = 1000.0
    assert interval_left(now + 3597.2, now) == 3597
    assert interval_left(now + 3597.0, now) == 3597
    assert interval_left(now + 0.3, now) == 1
    assert interval_left(now, now) is None
    assert interval_left(now - 1, now) is None


@OVER_TCP_AND_WS
def test_a_message_with_one_second_forwarded_at_once_keeps_it_MQTT_3_3_2_6(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """A message with a Message Expiry Interval of 1 s, delivered as it arrives, goes with 1 (not 0, not
    dropped). Also Mosquitto."""
    topic = new_topic()
    subscriber = clients(v5_port)
    subscriber.connect()
    subscriber.subscribe((topic, 1))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"now", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    got = subscriber.message()
    assert (got.payload, got.properties.MessageExpiryInterval) == (b"now", 1)


@OVER_TCP_AND_WS
def test_expired_messages_are_not_delivered_and_the_rest_carry_the_time_left_MQTT_3_3_2_5_6(
    v5_port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """Queued for an offline session: a message whose expiry interval passed is never delivered, to a v5 or a
    3.1.1 client [MQTT-3.3.2-5]; one still valid arrives with its interval minus the time it waited
    [MQTT-3.3.2-6]."""
    topic = new_topic()
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    v5_id, v3_id = f"exp5-{secrets.token_hex(3)}", f"exp3-{secrets.token_hex(3)}"
    away = clients(v5_port, v5_id)
    away.connect(properties=keep)
    away.subscribe((topic, 1))
    away.disconnect()
    old = raw(v5_port)
    old.connect(v3_id, clean=False)
    old.subscribe((topic, 1))
    old.disconnect()
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"short", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    publisher.publish(topic, b"long", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    time.sleep(2.5)  # the first message's interval passes while both subscribers are away
    back = clients(v5_port, v5_id)
    assert back.connect(clean_start=False, properties=keep)[0].session_present
    got = back.message()
    assert got.payload == b"long" and 90 <= got.properties.MessageExpiryInterval <= 98
    assert back.no_message(1.0)
    old = raw(v5_port)
    old.connect(v3_id, clean=False)
    first = old.expect(PUBLISH)
    assert first.payload == b"long"
    assert first.publish_id is not None
    old.ack(PUBACK, first.publish_id)
    with pytest.raises(TimeoutError):
        old.read(1.0)


# Will delay -------------------------------------------------------------------------------------------


def _connect_with_delayed_will(client_id: str, topic: str, delay: int) -> bytes:
    """CONNECT (v5, clean start 0, session expiry 60 s) with a QoS 1 will held ``delay`` seconds."""
    session = b"\x05\x11" + struct.pack("!I", 60)
    will_props = b"\x05\x18" + struct.pack("!I", delay)
    body = struct.pack("!H", 4) + b"MQTT" + bytes((5, 0x04 | 0x08)) + struct.pack("!H", 60) + session
    body += struct.pack("!H", len(client_id)) + client_id.encode() + will_props
    body += struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", 4) + b"gone"
    return packet(CONNECT, 0, body)


@OVER_TCP_AND_WS
def test_will_delay_no_will_when_the_client_is_back_in_time_MQTT_3_1_3_9(
    v5_port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """A client whose connection drops and that reconnects within its Will Delay Interval publishes no will
    [MQTT-3.1.3-9]; one that stays away publishes it once the interval has passed."""
    topic = new_topic()
    watcher = clients(v5_port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    blip = f"blip-{secrets.token_hex(3)}"
    first = raw(v5_port)
    first.send(_connect_with_delayed_will(blip, topic, 3))
    assert first.expect(CONNACK).body[1] == 0
    first.drop()  # the network changes
    again = raw(v5_port)
    again.send(_connect_with_delayed_will(blip, topic, 3))
    assert again.expect(CONNACK).body[0] == 1  # session present
    assert watcher.no_message(5.0)
    gone = raw(v5_port)
    gone.send(_connect_with_delayed_will(f"gone-{secrets.token_hex(3)}", topic, 1))
    assert gone.expect(CONNACK).body[1] == 0
    gone.drop()
    assert watcher.message().payload == b"gone"


ADMIN_ACTIONS = {  # how an administrator ends a user's access, through the REST API
    "disabled": ("PATCH", "", {"disabled": True}),
    "deleted": ("DELETE", "", None),
    "reset": ("POST", "/password", {"password": "a brand new passphrase"}),
}


@TRANSPORTS
@pytest.mark.parametrize("action", sorted(ADMIN_ACTIONS))
def test_user_disabled_deleted_or_reset_gets_disconnect_0x98_administrative_action(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client], websocket: bool, action: str
) -> None:
    """An administrator disables, deletes or resets the password of a user: its v5 connection gets DISCONNECT
    0x98 "administrative action" with a reason string (MQTT 5.0 §3.14.2.1)."""
    admin, admin_password = chat_users.user("admin", role=Role.ADMIN)
    user, password = chat_users.user("erin")
    client = clients(port_of(chat_stack, websocket), user=user, password=password, websocket=websocket)
    assert client.connect()[1].value == 0
    client.client.reconnect_delay_set(60, 120)  # stay away once thrown out
    method, suffix, body = ADMIN_ACTIONS[action]
    with chat_stack.http(admin, admin_password) as http:
        response = http.request(method, f"/v1/admin/users/{user}{suffix}", json=body)
        assert response.status_code in (200, 204), response.text
    reason, disconnect = client.disconnects.get(timeout=20)
    assert reason.value == 0x98 and disconnect.ReasonString


# Shared subscriptions -----------------------------------------------------------------------------------


@OVER_TCP_AND_WS
def test_shared_subscription_gives_each_message_to_one_member_MQTT_4_8_2(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """Two members of ``$share/{group}/{topic}`` (MQTT 5.0 §4.8.2): each message published on the topic goes to
    exactly one of them, with the QoS granted [MQTT-4.8.2-3]."""
    topic, group = new_topic(), f"g{secrets.token_hex(3)}"
    members = [clients(v5_port), clients(v5_port)]
    for member in members:
        member.connect()
        assert [code.value for code in member.subscribe((f"$share/{group}/{topic}", 1))] == [1]
    publisher = clients(v5_port)
    publisher.connect()
    sent = [b"m-%d" % n for n in range(10)]
    for payload in sent:
        assert publisher.publish(topic, payload, 1)[0].value == 0
    got: list[tuple[bytes, int]] = []

    def all_ten() -> bool:
        for member in members:
            while not member.messages.empty():
                message = member.messages.get()
                got.append((message.payload, message.qos))
        return len(got) >= len(sent)

    wait_for(all_ten, what="ten messages across the group")
    assert all(member.no_message(0.5) for member in members), "a message went to both members"
    assert sorted(got) == sorted((payload, 1) for payload in sent)


# What the broker does not take ------------------------------------------------------------------------


@SWITCHBOARD_OVER_TCP_AND_WS
def test_packet_over_the_maximum_gets_disconnect_0x95_MQTT_3_2_2_15(v5_port: int, raw: Raw) -> None:
    """A PUBLISH over the Maximum Packet Size the broker announced (mqtt.max_packet_bytes, 2048 here):
    DISCONNECT 0x95 "packet too large" [MQTT 5.0 §4.13.2]."""
    client = raw(v5_port)
    client.send(raw_connect(f"big-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x00" + b"x" * 3000))
    assert client.expect(DISCONNECT).body[0] == 0x95


# Subscription options ---------------------------------------------------------------------------------


@OVER_TCP_AND_WS
def test_no_local_keeps_a_clients_own_messages_from_it_MQTT_3_8_3_3(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    topic = new_topic()
    me = clients(v5_port)
    me.connect()
    me.subscribe((topic, SubscribeOptions(qos=1, noLocal=True)))
    me.publish(topic, b"mine", 1)
    other = clients(v5_port)
    other.connect()
    other.publish(topic, b"theirs", 1)
    assert me.message().payload == b"theirs"
    assert me.no_message(1.0)


@OVER_TCP_AND_WS
def test_retain_as_published_keeps_the_retain_flag_MQTT_3_3_1_12_13(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """Retain As Published: a live retained message arrives with RETAIN 1 [MQTT-3.3.1-12]; without it, 0
    [MQTT-3.3.1-13]."""
    topic = new_topic()
    as_published, plain = clients(v5_port), clients(v5_port)
    for client, flag in ((as_published, True), (plain, False)):
        client.connect()
        client.subscribe((topic, SubscribeOptions(qos=1, retainAsPublished=flag)))
    publisher = clients(v5_port)
    publisher.connect()
    publisher.client.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(20)
    assert as_published.message().retain is True
    assert plain.message().retain is False
