"""broker.properties and broker.codec_v5: the MQTT 5 property table and packet forms agree with paho-mqtt 2.x's
own (public) encoders and tables, and bad input is refused with a reason naming the rule."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker import properties
from broker.codec import PUBACK_BYTE, Malformed, ProtocolViolation
from broker.codec_v5 import (
    Reason,
    decode_ack,
    decode_connect,
    decode_reason,
    decode_subscribe,
    decode_unsubscribe,
    encode_ack,
    encode_connack,
    encode_disconnect,
    encode_publish,
    encode_suback,
)
from broker.properties import WILL, P, Properties, PropertyError, decode, encode, forwarded
from tests.rawmqtt import connect_packet

PAHO_TYPES = {
    "Byte": properties.Type.BYTE,
    "Two Byte Integer": properties.Type.TWO,
    "Four Byte Integer": properties.Type.FOUR,
    "Variable Byte Integer": properties.Type.VARINT,
    "Binary Data": properties.Type.BINARY,
    "UTF-8 Encoded String": properties.Type.STRING,
    "UTF-8 String Pair": properties.Type.PAIR,
}


def test_property_table_matches_paho() -> None:
    """Every property identifier [MQTT 5.0 §2.2.2.2], its type and the packets that may carry it."""
    paho = PahoProperties(PacketTypes.PUBLISH)
    assert set(properties.SPEC) == set(paho.properties)
    for identifier, (kind, packets) in properties.SPEC.items():
        paho_kind, paho_packets = paho.properties[identifier]
        assert kind is PAHO_TYPES[paho.types[paho_kind]], paho.getNameFromIdent(identifier)
        assert packets == {WILL if p == PacketTypes.WILLMESSAGE else p for p in paho_packets}, identifier


def _paho(packet: int, **values: object) -> bytes:
    props = PahoProperties(packet)
    for name, value in values.items():
        setattr(props, name, value)
    return bytes(props.pack())


def test_publish_properties_decode_as_paho_encodes_them() -> None:
    data = _paho(
        PacketTypes.PUBLISH,
        PayloadFormatIndicator=1,
        MessageExpiryInterval=3600,
        ContentType="application/json",
        ResponseTopic="reply/to/me",
        CorrelationData=b"\x00\x01id",
        SubscriptionIdentifier=[300],
        TopicAlias=7,
        UserProperty=[("a", "1"), ("a", "2"), ("é", "ü")],
    )
    props, end = decode(data, 0, PacketTypes.PUBLISH)
    assert end == len(data)
    assert props.values == {
        P.PAYLOAD_FORMAT_INDICATOR: 1,
        P.MESSAGE_EXPIRY_INTERVAL: 3600,
        P.CONTENT_TYPE: "application/json",
        P.RESPONSE_TOPIC: "reply/to/me",
        P.CORRELATION_DATA: b"\x00\x01id",
        P.TOPIC_ALIAS: 7,
    }
    assert props.user == [("a", "1"), ("a", "2"), ("é", "ü")]
    assert props.subscription_ids == [300]
    # What goes on to subscribers, read back by paho: no alias, no subscription id, no expiry (re-encoded).
    kept = forwarded(props)
    back = PahoProperties(PacketTypes.PUBLISH)
    back.unpack(properties.encode_varint(len(kept)) + kept)
    assert back.ResponseTopic == "reply/to/me" and back.CorrelationData == b"\x00\x01id"
    assert back.UserProperty == [("a", "1"), ("a", "2"), ("é", "ü")]
    assert not hasattr(back, "TopicAlias") and not hasattr(back, "SubscriptionIdentifier")


def test_connack_properties_encode_as_paho_decodes_them() -> None:
    ours = Properties(
        {
            P.SESSION_EXPIRY_INTERVAL: 604800,
            P.ASSIGNED_CLIENT_IDENTIFIER: "auto-1",
            P.SERVER_KEEP_ALIVE: 60,
            P.RECEIVE_MAXIMUM: 20,
            P.TOPIC_ALIAS_MAXIMUM: 0,
            P.MAXIMUM_QOS: 2,
            P.RETAIN_AVAILABLE: 1,
            P.MAXIMUM_PACKET_SIZE: 262144,
            P.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
            P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
            P.SHARED_SUBSCRIPTION_AVAILABLE: 1,
            P.REASON_STRING: "ok",
        }
    )
    back = PahoProperties(PacketTypes.CONNACK)
    back.unpack(encode(ours))
    assert back.SessionExpiryInterval == 604800 and back.AssignedClientIdentifier == "auto-1"
    assert back.ServerKeepAlive == 60 and back.ReceiveMaximum == 20 and back.MaximumPacketSize == 262144
    assert back.MaximumQoS == 2 and back.SharedSubscriptionAvailable == 1 and back.ReasonString == "ok"
    assert decode(encode(ours), 0, PacketTypes.CONNACK)[0] == ours


def test_property_not_allowed_in_the_packet_is_a_protocol_error() -> None:
    """[MQTT-2.2.2-2]: e.g. a Topic Alias in CONNECT's properties."""
    data = b"\x03\x23\x00\x01"
    with pytest.raises(PropertyError, match="Topic Alias is not allowed in CONNECT"):
        decode(data, 0, PacketTypes.CONNECT)


def test_property_given_twice_is_a_protocol_error() -> None:
    data = b"\x0a\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02"
    with pytest.raises(PropertyError, match="Message Expiry Interval given twice"):
        decode(data, 0, PacketTypes.PUBLISH)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x02\x7f\x00", "unknown property identifier 0x7F"),
        (b"\x03\x02\x00\x00", "cut short"),
        (b"\x05\x03\x00\x02\xff\xfe", "ill-formed UTF-8"),
        (b"\x07\x26\x00\x01a\x00\x05b" + b"payload", "longer than its property block"),
        (b"\x09", "longer than the packet"),
        (b"\xff\xff\xff\xff\x01", "more than 4 bytes"),
    ],
)
def test_malformed_properties_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        decode(data, 0, PacketTypes.PUBLISH)


def test_connect_v5_decodes_paho_properties() -> None:
    props = _paho(PacketTypes.CONNECT, SessionExpiryInterval=300, ReceiveMaximum=10, UserProperty=[("k", "v")])
    will = _paho(PacketTypes.WILLMESSAGE, WillDelayInterval=5, ContentType="text/plain")
    body = (
        b"\x00\x04MQTT\x05"
        + bytes((0x02 | 0x04 | 0x08 | 0x80 | 0x40,))
        + b"\x00\x3c"
        + props
        + b"\x00\x03cid"
        + will
        + b"\x00\x03w/t\x00\x03bye"
        + b"\x00\x04user\x00\x02pw"
    )
    packet = decode_connect(body)
    assert (packet.level, packet.clean_start, packet.keep_alive, packet.client_id) == (5, True, 60, "cid")
    assert packet.properties.values == {P.SESSION_EXPIRY_INTERVAL: 300, P.RECEIVE_MAXIMUM: 10}
    assert packet.properties.user == [("k", "v")]
    assert packet.will_properties.values == {P.WILL_DELAY_INTERVAL: 5, P.CONTENT_TYPE: "text/plain"}
    assert (packet.will_topic, packet.will_payload, packet.will_qos) == ("w/t", b"bye", 1)
    assert (packet.username, packet.password) == ("user", "pw")
    # the 3.1.1 CONNECT the tests' raw client sends is not a valid v5 one: no property length
    with pytest.raises(Malformed):
        decode_connect(connect_packet("cid", "u", "p")[2:])


def test_subscribe_options_decode_as_paho_packs_them() -> None:
    """Subscription options [MQTT 5.0 §3.8.3.1]; reserved bits set are malformed [MQTT-3.8.3-5]."""
    options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True, retainHandling=2)
    props = _paho(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42)
    body = b"\x00\x07" + props + b"\x00\x03a/b" + bytes(options.pack()) + b"\x00\x01#" + b"\x00"
    packet_id, decoded, requests = decode_subscribe(body)
    assert packet_id == 7 and decoded.subscription_ids == [42]
    first, second = requests
    assert (first.topic_filter, first.qos, first.no_local, first.retain_as_published) == ("a/b", 1, True, True)
    assert first.retain_handling == 2
    assert (second.topic_filter, second.qos, second.no_local, second.retain_handling) == ("#", 0, False, 0)
    with pytest.raises(Malformed, match=r"MQTT-3\.8\.3-5"):
        decode_subscribe(b"\x00\x07\x00\x00\x01a\x40")
    with pytest.raises(ProtocolViolation, match="without any topic filter"):
        decode_subscribe(b"\x00\x07\x00")
    assert decode_unsubscribe(b"\x00\x09\x00\x00\x01a")[::2] == (9, ["a"])


def test_acks_with_and_without_reason_codes() -> None:
    """A reason code and properties may be left out [MQTT 5.0 §3.4.2.1]; our own refusals carry a reason string
    paho reads back."""
    assert decode_ack(4, b"\x00\x05") == (5, 0, Properties())
    assert decode_ack(4, b"\x00\x05\x10")[:2] == (5, 0x10)
    pid, reason, props = decode_ack(4, b"\x00\x05\x87\x05\x1f\x00\x02no")
    assert (pid, reason, props.get_str(P.REASON_STRING)) == (5, 0x87, "no")
    assert encode_ack(PUBACK_BYTE, 5) == b"\x40\x02\x00\x05"
    refused = encode_ack(PUBACK_BYTE, 5, Reason.NOT_AUTHORIZED, "not allowed to publish to x")
    assert refused[0] == 0x40 and refused[4] == 0x87
    back = PahoProperties(PacketTypes.PUBACK)
    back.unpack(refused[5:])
    assert back.ReasonString == "not allowed to publish to x"
    assert str(ReasonCode(PacketTypes.PUBACK, identifier=refused[4])) == "Not authorized"


def test_connack_suback_disconnect_and_publish_layouts() -> None:
    assert encode_connack(True, 0) == b"\x20\x03\x01\x00\x00"
    assert encode_connack(True, 0x86) == b"\x20\x03\x00\x86\x00"  # no session present on a refusal
    assert encode_suback(3, [1, 0x87]) == b"\x90\x05\x00\x03\x00\x01\x87"
    assert encode_disconnect(0) == b"\xe0\x00"
    data = encode_disconnect(Reason.SESSION_TAKEN_OVER, "taken over")
    assert decode_reason(14, data[2:]) == (0x8E, Properties({P.REASON_STRING: "taken over"}))
    fields = properties.encode_fields(Properties(user=[("k", "v")]))
    publish = encode_publish("t/x", b"hi", 1, 9, dup=False, retain=True, fields=fields)
    assert publish[0] == 0x33 and publish.endswith(b"hi")
    props, end = decode(publish, 2 + 2 + 3 + 2, PacketTypes.PUBLISH)
    assert props.user == [("k", "v")] and publish[end:] == b"hi"
