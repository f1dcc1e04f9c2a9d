"""Operator ACL rules (mqtt.acl_rules): pure decisions, then a broker configured from a YAML file."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from switchboard.rules import OperatorRule, RuleAction, covers, decide
from tests.conftest import stack_users
from tests.helpers import mosquitto_pub, start_stack
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]

RULES = (
    OperatorRule(False, RuleAction.SUBSCRIBE, "secret/#"),
    OperatorRule(True, RuleAction.ALL, "sensors/%u/#"),
    OperatorRule(True, RuleAction.PUBLISH, "clients/%c/status"),
    OperatorRule(True, RuleAction.ALL, "#"),
)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("secret/#", "secret/x", True),
        ("secret/#", "secret/#", True),
        ("secret/#", "#", False),  # "#" reaches further than the pattern
        ("a/+", "a/+", True),
        ("a/+", "a/#", False),
        ("#", "$SYS/x", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_covers(pattern: str, topic: str, expected: bool) -> None:
    assert covers(pattern, topic) is expected


def test_first_matching_rule_decides_and_placeholders_are_filled() -> None:
    def ok(topic: str, *, subscribing: bool, user: str | None = "alice", client: str = "c1") -> bool:
        return decide(RULES, subscribing=subscribing, username=user, client_id=client, topic=topic)[0]

    assert not ok("secret/plans", subscribing=True)
    assert ok("secret/plans", subscribing=False)  # the deny rule is for subscribe only
    assert ok("#", subscribing=True)  # allowed, but secret/... deliveries are denied one by one
    assert ok("sensors/alice/t", subscribing=False)
    assert ok("clients/c1/status", subscribing=False)
    assert not decide(RULES[:3], subscribing=False, username=None, client_id="c1", topic="sensors/alice/t")[0]
    assert not decide(RULES[:3], subscribing=False, username="bob", client_id="c/1", topic="clients/c/1/status")[0]
    allowed, reason = decide(RULES[:1], subscribing=False, username="a", client_id="c", topic="x")
    assert not allowed and reason == "no rule in mqtt.acl_rules matches"


def test_broker_applies_the_rules_from_its_config_file(tmp_path: Path, raw: Raw) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(
        "mqtt:\n"
        "  allow_anonymous: true\n"
        "  acl_rules:\n"
        '    - {permission: deny, action: subscribe, topic: "secret/#"}\n'
        '    - {permission: allow, action: all, topic: "sensors/%u/#"}\n'
        '    - {permission: deny, action: all, topic: "sensors/#"}\n'
        '    - {permission: allow, action: all, topic: "#"}\n'
    )
    stack = start_stack(f"sqlite:///{tmp_path}/rules.db", tmp_path, SWITCHBOARD_CONFIG=str(config))
    try:
        with stack_users(stack) as users:
            alice, alice_pw = users.user("alice")
            bob, _ = users.user("bob")
        tag = secrets.token_hex(3)

        publisher = raw(stack.mqtt_port)
        publisher.connect(f"pub-{tag}")
        publisher.publish(f"secret/{tag}/old", b"retained secret", qos=0, retain=True)
        publisher.publish(f"open/{tag}/old", b"retained open", qos=0, retain=True)

        everything = raw(stack.mqtt_port)
        everything.connect(f"all-{tag}")
        assert everything.subscribe(("#", 0), (f"secret/{tag}/#", 0)) == [0, 0x80]
        retained = {p.topic for p in everything.drain()}
        assert f"open/{tag}/old" in retained and f"secret/{tag}/old" not in retained

        publisher.publish(f"secret/{tag}/new", b"live secret")
        publisher.publish(f"open/{tag}/new", b"live open")
        mosquitto_pub(stack.mqtt_port, alice, alice_pw, f"dm/{bob}/{alice}", "private", qos=0)
        live = [p.topic for p in everything.drain()]
        assert f"open/{tag}/new" in live
        assert not [t for t in live if t.startswith(("secret/", "dm/"))]  # rules and the chat scheme hold

        sensor = raw(stack.mqtt_port)
        sensor.connect(f"sensor-{tag}", alice, alice_pw)
        assert sensor.subscribe((f"sensors/{alice}/#", 0), (f"sensors/{bob}/#", 0)) == [0, 0x80]
    finally:
        assert stack.stop() == 0
