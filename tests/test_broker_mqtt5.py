"""MQTT 5 on Switchboard's broker, with real v5 clients nobody here wrote (paho-mqtt 2.x, mosquitto_pub/sub
``-V mqttv5``), one test per feature, named by the normative statement it proves. Raw bytes only where a
client library would refuse to send them (a malformed property, a silent client)."""

from __future__ import annotations

import secrets
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.conftest import OPEN_LIMITS, Users
from tests.helpers import Stack, _Lines, start_stack, wait_for
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
    DISCONNECT,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RawClient,
    packet,
)

Raw = Callable[..., RawClient]
SESSION_TAKEN_OVER, KEEP_ALIVE_TIMEOUT, MALFORMED = 0x8E, 0x8D, 0x81
AUTH = 15  # the packet type


# CONNECT / CONNACK --------------------------------------------------------------------------------------


@SWITCHBOARD_OVER_TCP_AND_WS
def test_connack_announces_what_the_broker_supports_MQTT_3_2_2(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """[MQTT-3.2.2-?] CONNACK properties: retain, wildcard and shared subscriptions available, topic alias maximum
    16, subscription identifiers available, the maximum packet size (mqtt.max_packet_bytes = 2048 here)."""
    flags, reason, connack = clients(v5_port).connect()
    assert reason.value == 0 and not flags.session_present
    assert connack.RetainAvailable == 1 and connack.WildcardSubscriptionAvailable == 1
    assert connack.SharedSubscriptionAvailable == 1 and connack.SubscriptionIdentifierAvailable == 1
    assert connack.TopicAliasMaximum == 16 and connack.MaximumPacketSize == 2048
    assert not hasattr(connack, "MaximumQoS")  # absent: QoS 2 is supported


@OVER_TCP_AND_WS
def test_empty_client_id_gets_an_assigned_client_identifier_MQTT_3_2_2_16(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    _flags, reason, connack = clients(v5_port, client_id="").connect(clean_start=False)
    assert reason.value == 0 and connack.AssignedClientIdentifier.startswith("auto-")


@TRANSPORTS
def test_bad_credentials_get_connack_0x86_MQTT_3_1_4_2(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client], websocket: bool
) -> None:
    user, _password = chat_users.user("mallory")
    _flags, reason, _props = clients(
        port_of(chat_stack, websocket), user=user, password="wrong", websocket=websocket
    ).connect()
    assert reason.value == 0x86


@SWITCHBOARD_OVER_TCP_AND_WS
def test_authentication_method_gets_connack_0x8C(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """Enhanced authentication (AUTH) is not supported: 0x8C "bad authentication method" (docs/broker.md)."""
    asked = props(PacketTypes.CONNECT, AuthenticationMethod="SCRAM-SHA-1")
    _flags, reason, connack = clients(v5_port).connect(properties=asked)
    assert reason.value == 0x8C and "not supported" in connack.ReasonString


@SWITCHBOARD_OVER_TCP_AND_WS
def test_auth_without_an_authentication_method_gets_disconnect_0x82_MQTT_4_12_0_7(v5_port: int, raw: Raw) -> None:
    """A client whose CONNECT had no Authentication Method must not send AUTH [MQTT-4.12.0-7]: one that does gets
    DISCONNECT 0x82 "protocol error" (raw bytes: paho sends no AUTH)."""
    client = raw(v5_port)
    client.send(raw_connect(f"auth-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(AUTH, 0, b"\x18\x00"))  # Continue Authentication, no properties
    assert client.expect(DISCONNECT).body[0] == 0x82


@SWITCHBOARD_OVER_TCP_AND_WS
def test_session_expiry_is_capped_and_announced_MQTT_3_2_2_2(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """A client asking for a session that never expires gets mqtt.max_session_expiry_seconds (7 days), said in
    CONNACK's Session Expiry Interval."""
    asked = props(PacketTypes.CONNECT, SessionExpiryInterval=0xFFFFFFFF)
    _flags, _reason, connack = clients(v5_port).connect(properties=asked)
    assert connack.SessionExpiryInterval == 7 * 24 * 3600


@OVER_TCP_AND_WS
def test_session_with_expiry_keeps_its_queue_and_zero_ends_at_disconnect_MQTT_3_1_2_5(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """A session with an expiry interval resumes (session present, queued QoS 1 message delivered)
    [MQTT-3.1.2-5]; with interval 0 it ends at disconnect, so the next CONNECT finds none [MQTT 5.0 §3.1.2.11.2]."""
    topic, client_id = new_topic(), f"expiring-{secrets.token_hex(3)}"
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    first = clients(v5_port, client_id)
    first.connect(properties=keep)
    assert first.subscribe((topic, 1)) == [1]
    first.disconnect()
    publisher = clients(v5_port)
    publisher.connect()
    publisher.publish(topic, b"while away", qos=1)
    back = clients(v5_port, client_id)
    flags, _reason, _props = back.connect(clean_start=False, properties=keep)
    assert flags.session_present
    assert back.message().payload == b"while away"
    back.disconnect()  # its session expiry is still 300: kept
    zero = clients(v5_port, client_id)
    assert zero.connect(clean_start=False)[0].session_present  # resumed, and now ends at this disconnect
    zero.disconnect()
    again = clients(v5_port, client_id)
    assert not again.connect(clean_start=False)[0].session_present


@OVER_TCP_AND_WS
def test_clean_start_discards_the_stored_session_MQTT_3_1_2_4(v5_port: int, clients: Callable[..., V5Client]) -> None:
    client_id = f"clean-{secrets.token_hex(3)}"
    keep = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    first = clients(v5_port, client_id)
    first.connect(properties=keep)
    first.disconnect()
    flags, reason, _props = clients(v5_port, client_id).connect(clean_start=True, properties=keep)
    assert reason.value == 0 and not flags.session_present


# PUBLISH ----------------------------------------------------------------------------------------------


@OVER_TCP_AND_WS
def test_properties_pass_through_unchanged_to_v5_subscribers_MQTT_3_3_2_17_18(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """User properties in order [MQTT-3.3.2-17, -18], response topic, correlation data [MQTT-3.3.2-15, -16],
    content type [MQTT-3.3.2-20], payload format indicator [MQTT-3.3.2-4]; over TCP and WebSocket."""
    port, topic = v5_port, new_topic()
    subscriber = clients(port)
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
    publisher = clients(port)
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
    port, topic = open_stack.mqtt_port, new_topic()
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


@OVER_TCP_AND_WS
def test_v5_and_v311_paho_clients_talk_to_each_other(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """The same with paho, over TCP and WebSocket: a v5 publisher's properties are dropped for a 3.1.1
    subscriber, and a 3.1.1 publisher's message reaches a v5 subscriber without properties."""
    topic = new_topic()
    v5, v311 = clients(v5_port), clients(v5_port, version=4)
    for subscriber in (v5, v311):
        subscriber.connect()
        subscriber.subscribe((topic, 1))
    publisher_v5, publisher_v311 = clients(v5_port), clients(v5_port, version=4)
    publisher_v5.connect()
    publisher_v311.connect()
    sent = props(PacketTypes.PUBLISH, UserProperty=[("k", "v")], ContentType="text/plain")
    assert publisher_v5.publish(topic, b"from-v5", 1, sent)[0].value == 0
    got = v5.message()
    assert (got.payload, got.properties.UserProperty, got.properties.ContentType) == (
        b"from-v5",
        [("k", "v")],
        "text/plain",
    )
    assert v311.message().payload == b"from-v5"  # 3.1.1 has no properties on the wire to carry them
    publisher_v311.publish(topic, b"from-v311", 1)
    got = v5.message()
    assert got.payload == b"from-v311"
    assert not hasattr(got.properties, "UserProperty") and not hasattr(got.properties, "ContentType")
    assert v311.message().payload == b"from-v311"


@TRANSPORTS
def test_refused_publish_gets_puback_0x87_with_a_reason_string_MQTT_3_4_2(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client], websocket: bool
) -> None:
    """An ACL refusal is no longer silent: PUBACK 0x87 "not authorized" and the ACL's reason."""
    user, password = chat_users.user("alice")
    other, _ = chat_users.user("bob")
    client = clients(port_of(chat_stack, websocket), user=user, password=password, websocket=websocket)
    assert client.connect()[1].value == 0
    reason, ack = client.publish(f"presence/{other}", b'{"status":"online"}', 1)
    assert reason.value == 0x87 and "your own presence" in ack.ReasonString


@SWITCHBOARD_OVER_TCP_AND_WS
def test_payload_marked_utf8_that_is_not_gets_0x99_MQTT_3_3_2_4(v5_port: int, clients: Callable[..., V5Client]) -> None:
    client = clients(v5_port)
    client.connect()
    marked = props(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
    reason, _ack = client.publish(new_topic(), b"\xff\xfe not utf-8", 1, marked)
    assert reason.value == 0x99


@SWITCHBOARD_OVER_TCP_AND_WS
def test_broker_topics_get_0x87_MQTT_3_4_2(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """A PUBLISH to a ``$`` topic is refused with PUBACK 0x87 and a reason string; the client stays served."""
    client = clients(v5_port)
    client.connect()
    reason, ack = client.publish("$SYS/mine", b"x", 1)
    assert reason.value == 0x87 and "$ topics are the broker's" in ack.ReasonString
    topic = new_topic()
    client.subscribe((topic, 1))
    assert client.publish(topic, b"after", 1)[0].value == 0
    assert client.message().payload == b"after"


@SWITCHBOARD_OVER_TCP_AND_WS
def test_pubrec_refusal_ends_the_qos2_exchange_MQTT_4_3_3(v5_port: int, raw: Raw) -> None:
    """PUBREC 0x87 ends the exchange [MQTT 5.0 §4.3.3]: a PUBREL for it gets PUBCOMP 0x92 "packet identifier
    not found" (paho 2.2 ignores PUBREC's reason code and sends PUBREL anyway, hence raw bytes)."""
    client = raw(v5_port)
    client.send(raw_connect(f"qos2-{secrets.token_hex(3)}"))
    assert client.expect(CONNACK).body[1] == 0
    client.send(packet(PUBLISH, 4, struct.pack("!H", 8) + b"$SYS/bad" + b"\x00\x07" + b"\x00" + b"x"))
    pubrec = client.expect(PUBREC)
    assert pubrec.body[:3] == b"\x00\x07\x87"
    client.send(packet(PUBREL, 2, b"\x00\x07"))
    assert client.expect(PUBCOMP).body[:3] == b"\x00\x07\x92"


@OVER_TCP_AND_WS
def test_retained_message_keeps_its_properties_MQTT_3_3_2_4(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """A retained message sent to a new subscription carries the properties it was published with (its expiry
    counted down) [MQTT-3.3.2-4, MQTT-3.3.2-6]."""
    topic = new_topic()
    publisher = clients(v5_port)
    publisher.connect()
    sent = props(PacketTypes.PUBLISH, UserProperty=[("room", "lobby")], MessageExpiryInterval=600)
    publisher.client.publish(topic, b"kept", qos=1, retain=True, properties=sent).wait_for_publish(20)
    late = clients(v5_port)
    late.connect()
    late.subscribe((topic, 1))
    got = late.message()
    assert got.retain and got.properties.UserProperty == [("room", "lobby")]
    assert 590 <= got.properties.MessageExpiryInterval <= 600


# SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------------


@TRANSPORTS
def test_suback_has_a_reason_code_per_filter_MQTT_3_9_3(
    chat_stack: Stack, chat_users: Users, clients: Callable[..., V5Client], websocket: bool
) -> None:
    """Granted QoS, 0x8F for a malformed filter (a shared subscription's group may not be a wildcard), 0x87 for
    one the ACL refuses, in the order asked."""
    user, password = chat_users.user("carol")
    other, _ = chat_users.user("dave")
    client = clients(port_of(chat_stack, websocket), user=user, password=password, websocket=websocket)
    client.connect()
    codes = client.subscribe((f"presence/{user}", 1), ("$share/+/a", 1), (f"dm/{other}/+", 1), (f"dm/{user}/+", 2))
    assert [code.value for code in codes] == [1, 0x8F, 0x87, 2]


@OVER_TCP_AND_WS
def test_unsuback_says_no_subscription_existed_MQTT_3_11_3(v5_port: int, clients: Callable[..., V5Client]) -> None:
    client = clients(v5_port)
    client.connect()
    topic = new_topic()
    client.subscribe((topic, 1))
    assert [code.value for code in client.unsubscribe(topic, "never/subscribed")] == [0x00, 0x11]


@OVER_TCP_AND_WS
def test_retain_handling_0_always_1_for_a_new_subscription_2_never_MQTT_3_3_1_9_10_11(
    v5_port: int, clients: Callable[..., V5Client]
) -> None:
    """Retain Handling 0 sends the retained message at every SUBSCRIBE [MQTT-3.3.1-9], 1 only when the
    subscription did not exist [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11]."""
    topic = new_topic()
    publisher = clients(v5_port)
    publisher.connect()
    publisher.client.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(20)
    never = clients(v5_port)
    never.connect()
    never.subscribe((topic, SubscribeOptions(qos=1, retainHandling=2)))
    always = clients(v5_port)
    always.connect()
    always.subscribe((topic, SubscribeOptions(qos=1, retainHandling=0)))
    assert always.message().payload == b"kept"
    if_new = clients(v5_port)
    if_new.connect()
    if_new.subscribe((topic, SubscribeOptions(qos=1, retainHandling=1)))
    assert if_new.message().payload == b"kept"
    for client, handling in ((always, 0), (if_new, 1)):  # the same subscription again
        client.subscribe((topic, SubscribeOptions(qos=1, retainHandling=handling)))
    assert always.message().payload == b"kept"
    assert if_new.no_message(1.0) and never.no_message(0.1)


# Server Keep Alive ------------------------------------------------------------------------------------


@OVER_TCP_AND_WS
def test_no_keep_alive_gets_a_server_keep_alive_MQTT_3_2_2_21(v5_port: int, clients: Callable[..., V5Client]) -> None:
    """A client asking for no keep-alive (0) is told to use mqtt.max_keep_alive_seconds (65,535 by default, as
    Mosquitto's max_keepalive) in CONNACK's Server Keep Alive [MQTT-3.2.2-21]; one within it gets none
    [MQTT-3.2.2-22]. Also Mosquitto."""
    forever = clients(v5_port)
    _flags, _reason, connack = forever.connect(keepalive=0)
    assert connack.ServerKeepAlive == 65535
    usual = clients(v5_port)
    _flags, _reason, connack = usual.connect(keepalive=30)
    assert not hasattr(connack, "ServerKeepAlive")


@TRANSPORTS
def test_server_keep_alive_is_enforced_MQTT_3_2_2_21(tmp_path: Path, raw: Raw, websocket: bool) -> None:
    """With mqtt.max_keep_alive_seconds 1, a client asking for 60 s is told 1 and, silent, gets DISCONNECT 0x8D
    (keep-alive timeout) after 1.5 s [MQTT-3.1.2-22]."""
    stack = start_stack(
        f"sqlite:///{tmp_path}/keepalive.db", tmp_path, **OPEN_LIMITS, SWITCHBOARD_MQTT__MAX_KEEP_ALIVE_SECONDS="1"
    )
    try:
        client = raw(port_of(stack, websocket), websocket=websocket)
        client.send(raw_connect(f"silent-{secrets.token_hex(3)}", keepalive=60))
        connack = client.expect(CONNACK).body
        assert connack[1] == 0 and b"\x13\x00\x01" in connack[2:]  # Server Keep Alive (0x13) = 1
        assert client.expect(DISCONNECT, timeout=20).body[0] == KEEP_ALIVE_TIMEOUT
    finally:
        assert stack.stop() == 0
