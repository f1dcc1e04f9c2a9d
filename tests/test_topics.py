"""Topic scheme v1: parsing topics and conversation ids."""

from __future__ import annotations

import pytest

from switchboard.topics import Kind, dm_conversation, is_valid_name, parse_conversation, parse_topic


@pytest.mark.parametrize("name", ["alice", "a", "A.b-c_9", "x" * 64])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize("name", ["", "x" * 65, "al ice", "a/b", "+", "#", "é", "a:b"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


def test_dm_topic_parses_to_sorted_conversation() -> None:
    topic = parse_topic("dm/bob/alice")
    assert topic is not None
    assert (topic.kind, topic.target, topic.sender) == (Kind.DM, "bob", "alice")
    assert topic.conversation == "dm:alice:bob" == dm_conversation("bob", "alice")


def test_group_presence_and_ack_topics() -> None:
    group = parse_topic("group/team/alice")
    assert group is not None and group.conversation == "group:team"
    presence = parse_topic("presence/alice")
    assert presence is not None and presence.kind is Kind.PRESENCE and presence.conversation is None
    assert parse_topic("ack/alice") is not None


@pytest.mark.parametrize(
    "topic", ["dm/bob", "dm/bob/alice/x", "dm/+/alice", "group/team/#", "presence/a/b", "chat/a/b", "", "dm//a"]
)
def test_malformed_topics_are_not_chat_topics(topic: str) -> None:
    assert parse_topic(topic) is None


def test_conversation_ids() -> None:
    dm = parse_conversation("dm:alice:bob")
    assert dm is not None and dm.members == ("alice", "bob")
    group = parse_conversation("group:team")
    assert group is not None and group.group == "team"
    assert parse_conversation("dm:bob:alice") is None  # names must be sorted: one id per conversation
    assert parse_conversation("dm:alice") is None
    assert parse_conversation("room:x") is None
