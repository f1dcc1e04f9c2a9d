"""ACL decisions of topic scheme v1, as pure functions over a small in-memory directory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from switchboard.acl import ANONYMOUS, Action, Identity, Policy
from switchboard.tables import Role


@dataclass
class Directory:
    users: set[str] = field(default_factory=lambda: {"alice", "bob", "mallory"})
    groups: dict[str, set[str]] = field(default_factory=lambda: {"team": {"alice", "bob"}})

    def user_exists(self, name: str) -> bool:
        return name in self.users

    def is_member(self, group: str, user: str) -> bool:
        return user in self.groups.get(group, set())

    def is_blocked(self, blocker: str, blocked: str) -> bool:
        return False

    def shares_conversation(self, user: str, other: str) -> bool:
        return any(user in members and other in members for members in self.groups.values())


ALICE = Identity("alice", Role.USER)
BRIDGE = Identity("switchboard-bridge", Role.SERVICE)
policy = Policy()


def allowed(action: Action, who: Identity, topic: str, directory: Directory | None = None) -> bool:
    return policy.check(action, who, topic, directory or Directory()).allowed


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("dm/bob/alice", True),
        ("dm/alice/bob", False),  # impersonating bob
        ("dm/nobody/alice", False),  # unknown recipient
        ("dm/bob", False),
        ("group/team/alice", True),
        ("group/team/bob", False),
        ("group/other/alice", False),
        ("presence/alice", True),
        ("presence/bob", False),
        ("receipt/bob/alice", True),
        ("receipt/bob/mallory", False),
        ("ack/alice", False),  # only the bridge publishes acks
        ("sensors/x", False),  # not a chat topic, generic topics off
        ("typing/dm:alice:bob/alice", True),
        ("typing/dm:alice:bob/bob", False),  # as bob
        ("typing/dm:bob:mallory/alice", False),  # not hers
        ("typing/dm:alice:nobody/alice", False),  # with a user who does not exist
        ("typing/dm:bob:alice/alice", False),  # not a conversation id (names unsorted)
        ("typing/group:team/alice", True),
        ("typing/group:other/alice", False),
        ("typing/team/alice", False),
    ],
)
def test_publish(topic: str, expected: bool) -> None:
    assert allowed(Action.PUBLISH, ALICE, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("dm/alice/+", True),
        ("dm/+/alice", True),
        ("dm/alice/bob", True),
        ("dm/bob/alice", True),
        ("dm/bob/+", False),
        ("dm/+/+", False),
        ("dm/#", False),
        ("#", False),
        ("+/alice/+", False),
        ("group/team/+", True),
        ("group/other/+", False),
        ("group/+/+", False),
        ("presence/+", True),
        ("presence/bob", True),
        ("ack/alice", True),
        ("ack/bob", False),
        ("receipt/alice/+", True),
        ("receipt/bob/+", False),
        ("typing/dm:alice:bob/+", True),
        ("typing/dm:alice:bob/bob", True),
        ("typing/dm:bob:mallory/+", False),
        ("typing/group:team/+", True),
        ("typing/group:other/+", False),
        ("typing/+/+", False),
        ("typing/#", False),
        ("typing/dm:alice:bob/#", False),
    ],
)
def test_subscribe(topic_filter: str, expected: bool) -> None:
    assert allowed(Action.SUBSCRIBE, ALICE, topic_filter) is expected


def test_removed_member_stops_receiving_group_messages() -> None:
    directory = Directory()
    assert allowed(Action.RECEIVE, ALICE, "group/team/bob", directory)
    directory.groups["team"].discard("alice")
    assert not allowed(Action.RECEIVE, ALICE, "group/team/bob", directory)


def test_service_account_reads_everything_but_publishes_only_acks_receipts_and_rest_unsends() -> None:
    assert allowed(Action.SUBSCRIBE, BRIDGE, "dm/#")
    assert allowed(Action.SUBSCRIBE, BRIDGE, "group/#")
    assert allowed(Action.PUBLISH, BRIDGE, "ack/alice")
    assert allowed(Action.PUBLISH, BRIDGE, "receipt/alice/bob")  # a read receipt made through REST (issue 16 §4)
    assert not allowed(Action.PUBLISH, BRIDGE, "receipt/alice/bob/extra")
    assert allowed(Action.PUBLISH, BRIDGE, "dm/alice/bob")  # an unsend made through REST, on its target's topic
    assert allowed(Action.PUBLISH, BRIDGE, "group/team/bob")
    assert not allowed(Action.PUBLISH, BRIDGE, "dm/alice/bob/extra")
    assert not allowed(Action.PUBLISH, BRIDGE, "presence/alice")
    assert not allowed(Action.PUBLISH, BRIDGE, "typing/dm:alice:bob/alice")


def test_anonymous_clients_never_reach_chat_topics() -> None:
    generic = Policy(generic_topics=True)
    assert not generic.check(Action.SUBSCRIBE, ANONYMOUS, "dm/alice/+", Directory()).allowed
    assert not generic.check(Action.PUBLISH, ANONYMOUS, "dm/alice/bob", Directory()).allowed
    assert generic.check(Action.PUBLISH, ANONYMOUS, "sensors/t1", Directory()).allowed
    assert not Policy().check(Action.PUBLISH, ANONYMOUS, "sensors/t1", Directory()).allowed


def test_denials_give_a_reason() -> None:
    decision = policy.check(Action.PUBLISH, ALICE, "dm/alice/bob", Directory())
    assert not decision and "the last level must be 'alice'" in decision.reason


def test_a_will_may_only_be_the_clients_own_presence() -> None:
    directory = Directory()
    assert policy.check_will(ALICE, "presence/alice", directory)
    assert not policy.check_will(ALICE, "presence/bob", directory)
    assert not policy.check_will(ALICE, "dm/bob/alice", directory)  # allowed as a publish, not as a will
    assert not policy.check_will(BRIDGE, "presence/switchboard-bridge", directory)
    assert not Policy(generic_topics=True).check_will(ANONYMOUS, "presence/alice", directory)
    assert Policy(generic_topics=True).check_will(ANONYMOUS, "devices/7/status", directory)


def test_a_shared_subscription_is_decided_on_its_filter() -> None:
    """``$share/{group}/{filter}``: joining a share group is allowed exactly when subscribing to the filter is."""
    assert allowed(Action.SUBSCRIBE, ALICE, "$share/phones/dm/alice/+")
    assert not allowed(Action.SUBSCRIBE, ALICE, "$share/phones/dm/bob/+")  # someone else's inbox
    assert allowed(Action.SUBSCRIBE, BRIDGE, "$share/switchboard/dm/#")
    assert not allowed(Action.SUBSCRIBE, ALICE, "$share/switchboard/$SYS/#")  # $ topics stay the admins'
    assert not allowed(Action.PUBLISH, ALICE, "$share/phones/dm/bob/alice")
    decision = policy.check(Action.SUBSCRIBE, BRIDGE, "$share/+/dm/#", Directory())
    assert not decision.allowed and "$share/{group}/{filter}" in decision.reason
