"""The API as RabbitMQ's HTTP auth backend (api/routes/rabbitmq.py), called as ``rabbitmq_auth_backend_http``
calls it: form-encoded POSTs (GET with query parameters too), answered in plain text ``allow``/``deny``, with
the topic arriving as an AMQP routing key of RabbitMQ's MQTT plugin. The decisions are the ones Switchboard's
broker makes (switchboard/acl.py); the EMQX and mosquitto-go-auth shapes are in tests/test_api.py."""

from __future__ import annotations

import httpx
import pytest

from api.routes.rabbitmq import mqtt_topic
from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import Stack


@pytest.mark.parametrize(
    ("routing_key", "topic"),
    [
        ("dm.bob.alice", "dm/bob/alice"),
        ("dm.alice.*", "dm/alice/+"),
        ("group.team.#", "group/team/#"),
        ("presence.*", "presence/+"),
    ],
)
def test_routing_keys_are_translated_back_to_mqtt_topics(routing_key: str, topic: str) -> None:
    assert mqtt_topic(routing_key) == topic


def test_rabbitmq_hooks_decide_what_the_broker_decides(chat_stack: Stack, chat_users: Users) -> None:
    alice, bob = chat_users.user("alice"), chat_users.user("bob")
    dotted = chat_users.user("a.b")
    team = chat_users.group("team", [alice[0], bob[0]])
    bridge = chat_users.user("bridge", role=Role.SERVICE)  # RabbitMQ calls as a service account
    with httpx.Client(base_url=f"{chat_stack.api}/v1/mqtt/rabbitmq", auth=bridge, trust_env=False) as http:

        def answer(path: str, **form: str) -> str:
            reply = http.post(path, data=form)
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("text/plain")
            return reply.text

        def topic(user: str, permission: str, routing_key: str) -> str:
            return answer(
                "/topic",
                username=user,
                vhost="/",
                resource="topic",
                name="amq.topic",
                permission=permission,
                routing_key=routing_key,
            )

        assert answer("/user", username=alice[0], password=alice[1]) == "allow"
        assert answer("/user", username=alice[0], password="wrong") == "deny"
        assert answer("/user", username="nobody-at-all", password="x") == "deny"
        # A "." in a name would be a level separator in AMQP (dm.bob.a.b): the user cannot log in there.
        assert answer("/user", username=dotted[0], password=dotted[1]) == "deny"
        assert http.get("/user", params={"username": bob[0], "password": bob[1]}).status_code == 405  # logged URLs
        assert answer("/vhost", username=alice[0], vhost="/", ip="203.0.113.7") == "allow"
        assert answer("/vhost", username=alice[0], vhost="other") == "deny"
        queue = {"username": alice[0], "vhost": "/", "resource": "queue"}
        assert answer("/resource", **queue, name="mqtt-subscription-phone-1qos1", permission="configure") == "allow"
        assert answer("/resource", **queue, name="orders", permission="read") == "deny"  # not the plugin's
        exchange = {"username": alice[0], "vhost": "/", "resource": "exchange", "name": "amq.topic"}
        assert answer("/resource", **exchange, permission="write") == "allow"
        assert answer("/resource", **exchange, permission="configure") == "deny"
        # Publishing (write) as yourself only; subscribing (read) to your own inbox only; groups for members.
        assert topic(alice[0], "write", f"dm.{bob[0]}.{alice[0]}") == "allow"
        assert topic(alice[0], "write", f"dm.{alice[0]}.{bob[0]}") == "deny"  # as bob
        assert topic(bob[0], "read", f"dm.{bob[0]}.*") == "allow"
        assert topic(alice[0], "read", f"dm.{bob[0]}.*") == "deny"
        assert topic(alice[0], "read", "#") == "deny"
        assert topic(alice[0], "write", f"group.{team}.{alice[0]}") == "allow"
        assert topic(alice[0], "write", f"dm.{bob[0]}.{alice[0]}.x") == "deny"  # one level too many
        assert topic(bridge[0], "read", "dm.*.*") == "allow"
        assert (
            answer(
                "/topic",
                username=alice[0],
                vhost="/",
                resource="topic",
                name="other",
                permission="write",
                routing_key=f"dm.{bob[0]}.{alice[0]}",
            )
            == "deny"
        )  # another exchange
        assert answer("/topic", username=alice[0]) == "deny"  # fields missing: deny, never an error page

    # Only RabbitMQ (a service account, or the hook secret) may ask: a user may not probe other users.
    with httpx.Client(base_url=f"{chat_stack.api}/v1/mqtt/rabbitmq", auth=alice, trust_env=False) as http:
        assert http.post("/user", data={"username": bob[0], "password": bob[1]}).status_code == 401
