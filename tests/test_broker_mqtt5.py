"""MQTT 5 on Switchboard's broker, with real v5 clients nobody here wrote (paho-mqtt 2.x, mosquitto_pub/sub
``-V mqttv5``), one test per feature, named by the normative statement it proves. Raw bytes only where a
client library would refuse to send them (a malformed property, a silent client)."""

from __future__ import annotations

import secrets
import struct
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import Stack, _Lines, wait_for
from tests.mqtt5 import V5Client, props
from tests.rawmqtt import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    RawClient,
    packet,
)

Raw = Callable[[int], RawClient]
SESSION_TAKEN_OVER, KEEP_ALIVE_TIMEOUT, MALFORMED = 0x8E, 0x8D, 0x81


@pytest.fixture
def clients() -> Iterator[Callable[..., V5Client]]:
    made: list[V5Client] = []

    def make(
        port: int,
        client_id: str | None = None,
        user: str | None = None,
        password: str | None = None,
        *,
        websocket: bool = False,
    ) -> V5Client:
        client = V5Client(port, client_id, user, password, websocket=websocket)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(params=["switchboard", "mosquitto"])
def port(request: pytest.FixtureRequest, open_stack: Stack) -> int:
    """Switchboard, and the same test against Mosquitto 2.0 (anonymous): the behaviour both brokers share.
    (Mosquitto 2.0.11 sends no DISCONNECT on takeover, keep-alive timeout or a malformed packet: those tests
    run on Switchboard only.)"""
    if request.param == "switchboard":
        return open_stack.mqtt_port
    return int(request.getfixturevalue("mosquitto"))


def _topic(prefix: str = "v5") -> str:
    return f"{prefix}/{secrets.token_hex(4)}"


def _raw_connect(client_id: str, keepalive: int = 60, properties: bytes = b"\x00") -> bytes:
    body = struct.pack("!H", 4) + b"MQTT" + bytes((5, 0x02)) + struct.pack("!H", keepalive) + properties
    return packet(CONNECT, 0, body + struct.pack("!H", len(client_id)) + client_id.encode())


# CONNECT / CONNACK --------------------------------------------------------------------------------------


def test_connack_announces_what_the_broker_supports_MQTT_3_2_2(
    open_stack: Stack, clients: Callable[..., V5Client]
) -> None:
    """[MQTT-3.2.2-?] CONNACK properties: retain, wildcard and shared subscriptions available, topic alias maximum
    0, subscription identifiers not available, the maximum packet size (mqtt.max_packet_bytes = 2048 here)."""
    flags, reason, connack = clients(open_stack.mqtt_port).connect()
    assert reason.value == 0 and not flags.session_present
    assert connack.RetainAvailable == 1 and connack.WildcardSubscriptionAvailable == 1
    assert connack.SharedSubscriptionAvailable == 1 and connack.SubscriptionIdentifierAvailable == 0
    assert connack.TopicAliasMaximum == 0 and connack.MaximumPacketSize == 2048
    assert not hasattr(connack, "MaximumQoS")  # absent: QoS 2 is supported


def test_empty_client_id_gets_an_assigned_client_identifier_MQTT_3_2_2_16(
    port: int, clients: Callable[..., V5Client]
) -> None:
    _flags, reason, connack = clients(port, client_id="").connect(clean_start=False)
    assert reason.value == 0 and connack.AssignedClientIdentifier.startswith("auto-")


def test_bad_credentials_get_connack_0x86_MQTT_3_1_4_2(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client]
) -> None:
    user, _password = chat_users.user("mallory")
    _flags, reason, _props = clients(chat_stack.mqtt_port, user=user, password="wrong").connect()
    assert reason.value == 0x86


def test_authentication_method_gets_connack_0x8C(open_stack: Stack, clients: Callable[..., V5Client]) -> None:
    """Enhanced authentication (AUTH) is not supported: 0x8C "bad authentication method" (docs/broker.md)."""
    asked = props(PacketTypes.CONNECT, AuthenticationMethod="SCRAM-SHA-1")
    _flags, reason, connack = clients(open_stack.mqtt_port).connect(properties=asked)
    assert reason.value == 0x8C and "not supported" in connack.ReasonString


def test_session_expiry_is_capped_and_announced_MQTT_3_2_2_2(
    open_stack: Stack, clients: Callable[..., V5Client]
) -> None:
    """A client asking for a session that never expires gets mqtt.max_session_expiry_seconds (7 days), said in
    CONNACK's Session Expiry Interval."""
    asked = props(PacketTypes.CONNECT, SessionExpiryInterval=0xFFFFFFFF)
    _flags, _reason, connack = clients(open_stack.mqtt_port).connect(properties=asked)
    assert connack.SessionExpiryInterval == 7 * 24 * 3600


def test_session_with_expiry_keeps_its_queue_and_zero_ends_at_disconnect_MQTT_3_1_2_5(
    port: int, clients: Callable[..., V5Client]
) -> None:
    """A session with an expiry interval resumes (session present, queued QoS 1 message delivered)
    [MQTT-3.1.2-5]; with interval 0 it ends at disconnect, so the next CONNECT finds none [MQTT 5.0 §3.1.2.11.2]."""
    topic, client_id = _topic(), f"expiring-{secrets.token_hex(3)}"
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    first = clients(port, client_id)
    first.connect(properties=keep)
    assert first.subscribe((topic, 1)) == [1]
    first.disconnect()
    publisher = clients(port)
    publisher.connect()
    publisher.publish(topic, b"while away", qos=1)
    back = clients(port, client_id)
    flags, _reason, _props = back.connect(clean_start=False, properties=keep)
    assert flags.session_present
    assert back.message().payload == b"while away"
    back.disconnect()  # its session expiry is still 300: kept
    zero = clients(port, client_id)
    assert zero.connect(clean_start=False)[0].session_present  # resumed, and now ends at this disconnect
    zero.disconnect()
    again = clients(port, client_id)
    assert not again.connect(clean_start=False)[0].session_present


def test_clean_start_discards_the_stored_session_MQTT_3_1_2_4(port: int, clients: Callable[..., V5Client]) -> None:
    client_id = f"clean-{secrets.token_hex(3)}"
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    first = clients(port, client_id)
    first.connect(properties=keep)
    first.disconnect()
    flags, reason, _props = clients(port, client_id).connect(clean_start=True, properties=keep)
    assert reason.value == 0 and not flags.session_present


# PUBLISH ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("websocket", [False, True], ids=["tcp", "ws"])
def test_properties_pass_through_unchanged_to_v5_subscribers_MQTT_3_3_2_17_18(
    open_stack: Stack, clients: Callable[..., V5Client], websocket: bool
) -> None:
    """User properties in order [MQTT-3.3.2-17, -18], response topic, correlation data [MQTT-3.3.2-15, -16],
    content type [MQTT-3.3.2-20], payload format indicator [MQTT-3.3.2-4]; over TCP and WebSocket."""
    port, topic = open_stack.ws_port if websocket else open_stack.mqtt_port, _topic()
    assert port, "no ws listener announced"
    subscriber = clients(port, websocket=websocket)
    subscriber.connect()
    subscriber.subscribe((topic, 1))
    sent = props(
        PacketTypes.PUBLISH,
        UserProperty=[("b", "2"), ("a", "1"), ("b", "3")],
        ResponseTopic="reply/here",
        CorrelationData=b"\x00req-7",
        ContentType="application/json",
        PayloadFormatIndicator=1,
    )
    publisher = clients(port, websocket=websocket)
    publisher.connect()
    assert publisher.publish(topic, b'{"x":1}', 1, sent)[0].value == 0
    got = subscriber.message()
    assert got.payload == b'{"x":1}'
    assert got.properties.UserProperty == [("b", "2"), ("a", "1"), ("b", "3")]
    assert got.properties.ResponseTopic == "reply/here" and got.properties.CorrelationData == b"\x00req-7"
    assert got.properties.ContentType == "application/json" and got.properties.PayloadFormatIndicator == 1


def _mosquitto_sub(port: int, topic: str, version: str, fmt: str) -> tuple[subprocess.Popen[str], _Lines]:
    """mosquitto_sub with debug lines (``Client ...``) and messages in ``fmt``, once its SUBACK came."""
    args = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-d"]
    process = subprocess.Popen(
        [*args, "-V", version, "-F", fmt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines = _Lines(process.stdout)
    lines.wait_for(r"received SUBACK", 20)
    return process, lines


def _messages(lines: _Lines) -> list[str]:
    return [line for line in lines.lines if not line.startswith(("Client ", "Subscribed "))]


def test_v5_and_v311_clients_talk_to_each_other_with_mosquitto_clients(open_stack: Stack) -> None:
    """mosquitto_pub -V mqttv5 -D publish user-property: a v5 mosquitto_sub sees the properties, a v3.1.1 one
    gets the message without them; a v3.1.1 publisher reaches a v5 subscriber without properties."""
    port, topic = open_stack.mqtt_port, _topic()
    v5, v5_lines = _mosquitto_sub(port, topic, "mqttv5", "%p|%P|%C")
    v311, v311_lines = _mosquitto_sub(port, topic, "mqttv311", "%p|%P")
    pub = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1"]
    v5_props = ["-D", "publish", "user-property", "k", "v", "-D", "publish", "content-type", "text/plain"]
    subprocess.run([*pub, "-V", "mqttv5", "-m", "from-v5", *v5_props], check=True)
    subprocess.run([*pub, "-V", "mqttv311", "-m", "from-v311"], check=True)
    try:
        wait_for(lambda: len(_messages(v5_lines)) >= 2 and len(_messages(v311_lines)) >= 2, what="both messages")
        assert _messages(v5_lines) == ["from-v5|k:v|text/plain", "from-v311||"]
        assert _messages(v311_lines) == ["from-v5|", "from-v311|"]
    finally:
        for process, lines in ((v5, v5_lines), (v311, v311_lines)):
            process.terminate()
            process.wait(timeout=10)
            lines.close()


def test_refused_publish_gets_puback_0x87_with_a_reason_string_MQTT_3_4_2(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client]
) -> None:
    """An ACL refusal is no longer silent: PUBACK 0x87 "not authorized" and the ACL's reason."""
    user, password = chat_users.user("alice")
    other, _ = chat_users.user("bob")
    client = clients(chat_stack.mqtt_port, user=user, password=password)
    assert client.connect()[1].value == 0
    reason, ack = client.publish(f"presence/{other}", b'{"status":"online"}', 1)
    assert reason.value == 0x87 and "your own presence" in ack.ReasonString


def test_payload_marked_utf8_that_is_not_gets_0x99_MQTT_3_3_2_4(
    open_stack: Stack, clients: Callable[..., V5Client]
) -> None:
    client = clients(open_stack.mqtt_port)
    client.connect()
    marked = props(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
    reason, _ack = client.publish(_topic(), b"\xff\xfe not utf-8", 1, marked)
    assert reason.value == 0x99


def test_broker_topics_get_0x87_MQTT_3_4_2(open_stack: Stack, clients: Callable[..., V5Client]) -> None:
    """A PUBLISH to a ``$`` topic is refused with PUBACK 0x87 and a reason string; the client stays served."""
    client = clients(open_stack.mqtt_port)
    client.connect()
    reason, ack = client.publish("$SYS/mine", b"x", 1)
    assert reason.value == 0x87 and "$ topics are the broker's" in ack.ReasonString
    topic = _topic()
    client.subscribe((topic, 1))
    assert client.publish(topic, b"after", 1)[0].value == 0
    assert client.message().payload == b"after"


def test_pubrec_refusal_ends_the_qos2_exchange_MQTT_4_3_3(open_stack: Stack, raw: Raw) -> None:
    """PUBREC 0x87 ends the exchange [MQTT 5.0 §4.3.3]: a PUBREL for it gets PUBCOMP 0x92 "packet identifier
    not found" (paho 2.2 ignores PUBREC's reason code and sends PUBREL anyway, hence raw bytes)."""
    client = raw(open_stack.mqtt_port)
    client.send(_raw_connect(f"qos2-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 4, struct.pack("!H", 8) + b"$SYS/bad" + b"\x00\x07" + b"\x00" + b"x"))
    pubrec = client.expect(PUBREC)
    assert pubrec.body[:3] == b"\x00\x07\x87"
    client.send(packet(PUBREL, 2, b"\x00\x07"))
    assert client.expect(PUBCOMP).body[:3] == b"\x00\x07\x92"


# SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------------


def test_suback_has_a_reason_code_per_filter_MQTT_3_9_3(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client]
) -> None:
    """Granted QoS, 0x8F for a malformed filter (a shared subscription's group may not be a wildcard), 0x87 for
    one the ACL refuses, in the order asked."""
    user, password = chat_users.user("carol")
    other, _ = chat_users.user("dave")
    client = clients(chat_stack.mqtt_port, user=user, password=password)
    client.connect()
    codes = client.subscribe((f"presence/{user}", 1), ("$share/+/a", 1), (f"dm/{other}/+", 1), (f"dm/{user}/+", 2))
    assert [code.value for code in codes] == [1, 0x8F, 0x87, 2]


def test_unsuback_says_no_subscription_existed_MQTT_3_11_3(port: int, clients: Callable[..., V5Client]) -> None:
    client = clients(port)
    client.connect()
    topic = _topic()
    client.subscribe((topic, 1))
    assert [code.value for code in client.unsubscribe(topic, "never/subscribed")] == [0x00, 0x11]


def test_retain_handling_2_sends_no_retained_messages_MQTT_3_3_1_11(
    port: int, clients: Callable[..., V5Client]
) -> None:
    topic = _topic()
    publisher = clients(port)
    publisher.connect()
    publisher.client.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(20)
    never = clients(port)
    never.connect()
    never.subscribe((topic, SubscribeOptions(qos=1, retainHandling=2)))
    always = clients(port)
    always.connect()
    always.subscribe((topic, SubscribeOptions(qos=1, retainHandling=0)))
    assert always.message().payload == b"kept"
    assert never.no_message(1.0)


# DISCONNECT -------------------------------------------------------------------------------------------


def test_takeover_sends_disconnect_0x8E_MQTT_3_1_4_3(open_stack: Stack, clients: Callable[..., V5Client]) -> None:
    client_id = f"taken-{secrets.token_hex(3)}"
    old = clients(open_stack.mqtt_port, client_id)
    old.connect()
    old.client.reconnect_delay_set(60, 120)  # stay away once thrown out
    clients(open_stack.mqtt_port, client_id).connect()
    reason, _props = old.disconnects.get(timeout=20)
    assert reason.value == SESSION_TAKEN_OVER


def test_keep_alive_timeout_sends_disconnect_0x8D_MQTT_3_1_2_22(open_stack: Stack, raw: Raw) -> None:
    client = raw(open_stack.mqtt_port)
    client.send(_raw_connect(f"silent-{secrets.token_hex(3)}", keepalive=1))
    assert client.expect(CONNACK).body[1] == 0
    got = client.expect(DISCONNECT, timeout=20)
    assert got.body[0] == KEEP_ALIVE_TIMEOUT


def test_malformed_property_gets_disconnect_0x81_MQTT_1_5_4_1(open_stack: Stack, raw: Raw) -> None:
    """A PUBLISH whose Content Type is ill-formed UTF-8: DISCONNECT 0x81, then the connection closes."""
    client = raw(open_stack.mqtt_port)
    client.send(_raw_connect(f"bad-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    bad_props = b"\x05\x03\x00\x02\xff\xfe"
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + bad_props + b"payload"))
    got = client.expect(DISCONNECT)
    assert got.body[0] == MALFORMED
    assert client.read(10) is None


def test_disconnect_with_will_publishes_the_will_MQTT_3_14_2(port: int, clients: Callable[..., V5Client]) -> None:
    """DISCONNECT reason 0x04 "disconnect with will message" publishes the will; a normal DISCONNECT does not
    [MQTT-3.14.4-3]."""
    topic = _topic()
    watcher = clients(port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    for reason, expected in ((0x00, None), (0x04, b"gone")):
        leaving = clients(port)
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


def test_receive_maximum_bounds_unacknowledged_messages_MQTT_3_3_4_9(
    port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """A client with Receive Maximum 1 gets its next QoS 1 message only after it acknowledged the last one."""
    topic = _topic()
    client = raw(port)
    client.send(_raw_connect(f"slow-{secrets.token_hex(3)}", properties=b"\x03\x21\x00\x01"))
    assert client.expect(CONNACK).body[1] == 0
    assert _raw_subscribe(client, topic, 1)[-1] == 1
    publisher = clients(port)
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


def test_message_over_the_clients_maximum_packet_size_is_not_sent_MQTT_3_1_2_25(
    port: int, clients: Callable[..., V5Client]
) -> None:
    """A message larger than the client's Maximum Packet Size is discarded for it, as if delivered; the next
    one that fits arrives."""
    topic = _topic()
    small = clients(port)
    small.connect(properties=props(PacketTypes.CONNECT, MaximumPacketSize=200))
    small.subscribe((topic, 1))
    publisher = clients(port)
    publisher.connect()
    publisher.publish(topic, b"x" * 500, 1)
    publisher.publish(topic, b"fits", 1)
    assert small.message().payload == b"fits"


# Message expiry ---------------------------------------------------------------------------------------


def test_expired_messages_are_not_delivered_and_the_rest_carry_the_time_left_MQTT_3_3_2_5_6(
    port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """Queued for an offline session: a message whose expiry interval passed is never delivered, to a v5 or a
    3.1.1 client [MQTT-3.3.2-5]; one still valid arrives with its interval minus the time it waited
    [MQTT-3.3.2-6]."""
    topic = _topic()
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    v5_id, v3_id = f"exp5-{secrets.token_hex(3)}", f"exp3-{secrets.token_hex(3)}"
    away = clients(port, v5_id)
    away.connect(properties=keep)
    away.subscribe((topic, 1))
    away.disconnect()
    old = raw(port)
    old.connect(v3_id, clean=False)
    old.subscribe((topic, 1))
    old.disconnect()
    publisher = clients(port)
    publisher.connect()
    publisher.publish(topic, b"short", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    publisher.publish(topic, b"long", 1, props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    time.sleep(2.5)  # the first message's interval passes while both subscribers are away
    back = clients(port, v5_id)
    assert back.connect(clean_start=False, properties=keep)[0].session_present
    got = back.message()
    assert got.payload == b"long" and 90 <= got.properties.MessageExpiryInterval <= 98
    assert back.no_message(1.0)
    old = raw(port)
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


def test_will_delay_no_will_when_the_client_is_back_in_time_MQTT_3_1_3_9(
    port: int, raw: Raw, clients: Callable[..., V5Client]
) -> None:
    """A client whose connection drops and that reconnects within its Will Delay Interval publishes no will
    [MQTT-3.1.3-9]; one that stays away publishes it once the interval has passed."""
    topic = _topic()
    watcher = clients(port)
    watcher.connect()
    watcher.subscribe((topic, 1))
    blip = f"blip-{secrets.token_hex(3)}"
    first = raw(port)
    first.send(_connect_with_delayed_will(blip, topic, 3))
    assert first.expect(CONNACK).body[1] == 0
    first.drop()  # the network changes
    again = raw(port)
    again.send(_connect_with_delayed_will(blip, topic, 3))
    assert again.expect(CONNACK).body[0] == 1  # session present
    assert watcher.no_message(5.0)
    gone = raw(port)
    gone.send(_connect_with_delayed_will(f"gone-{secrets.token_hex(3)}", topic, 1))
    assert gone.expect(CONNACK).body[1] == 0
    gone.drop()
    assert watcher.message().payload == b"gone"


def test_disabled_user_gets_disconnect_0x98_administrative_action(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client]
) -> None:
    """An administrator disables the user: its v5 connection gets DISCONNECT 0x98 with a reason string."""
    admin, admin_password = chat_users.user("admin", role=Role.ADMIN)
    user, password = chat_users.user("erin")
    client = clients(chat_stack.mqtt_port, user=user, password=password)
    assert client.connect()[1].value == 0
    client.client.reconnect_delay_set(60, 120)  # stay away once thrown out
    with chat_stack.http(admin, admin_password) as http:
        assert http.patch(f"/v1/admin/users/{user}", json={"disabled": True}).status_code == 200
    reason, disconnect = client.disconnects.get(timeout=20)
    assert reason.value == 0x98 and disconnect.ReasonString


# What the broker does not take ------------------------------------------------------------------------


def test_packet_over_the_maximum_gets_disconnect_0x95_MQTT_3_2_2_15(open_stack: Stack, raw: Raw) -> None:
    """A PUBLISH over the Maximum Packet Size the broker announced (mqtt.max_packet_bytes, 2048 here):
    DISCONNECT 0x95 "packet too large" [MQTT 5.0 §4.13.2]."""
    client = raw(open_stack.mqtt_port)
    client.send(_raw_connect(f"big-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x00" + b"x" * 3000))
    assert client.expect(DISCONNECT).body[0] == 0x95


def test_topic_alias_gets_disconnect_0x94_MQTT_3_3_2_9(open_stack: Stack, raw: Raw) -> None:
    """The broker announces Topic Alias Maximum 0: a PUBLISH with a Topic Alias gets DISCONNECT 0x94."""
    client = raw(open_stack.mqtt_port)
    client.send(_raw_connect(f"alias-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 0, struct.pack("!H", 3) + b"a/b" + b"\x03\x23\x00\x01" + b"x"))
    assert client.expect(DISCONNECT).body[0] == 0x94


def test_subscription_identifier_gets_disconnect_0xA1_MQTT_3_8_2(
    open_stack: Stack, clients: Callable[..., V5Client]
) -> None:
    """Subscription Identifier Available 0 in CONNACK: a SUBSCRIBE with one gets DISCONNECT 0xA1."""
    client = clients(open_stack.mqtt_port)
    client.connect()
    client.client.reconnect_delay_set(60, 120)
    client.client.subscribe(_topic(), 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=5))
    reason, _props = client.disconnects.get(timeout=20)
    assert reason.value == 0xA1


# Subscription options ---------------------------------------------------------------------------------


def test_no_local_keeps_a_clients_own_messages_from_it_MQTT_3_8_3_3(
    port: int, clients: Callable[..., V5Client]
) -> None:
    topic = _topic()
    me = clients(port)
    me.connect()
    me.subscribe((topic, SubscribeOptions(qos=1, noLocal=True)))
    me.publish(topic, b"mine", 1)
    other = clients(port)
    other.connect()
    other.publish(topic, b"theirs", 1)
    assert me.message().payload == b"theirs"
    assert me.no_message(1.0)


def test_retain_as_published_keeps_the_retain_flag_MQTT_3_3_1_12_13(
    port: int, clients: Callable[..., V5Client]
) -> None:
    """Retain As Published: a live retained message arrives with RETAIN 1 [MQTT-3.3.1-12]; without it, 0
    [MQTT-3.3.1-13]."""
    topic = _topic()
    as_published, plain = clients(port), clients(port)
    for client, flag in ((as_published, True), (plain, False)):
        client.connect()
        client.subscribe((topic, SubscribeOptions(qos=1, retainAsPublished=flag)))
    publisher = clients(port)
    publisher.connect()
    publisher.client.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(20)
    assert as_published.message().retain is True
    assert plain.message().retain is False
