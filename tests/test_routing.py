"""broker.routing: the subscription tree agrees with the MQTT 3.1.1 matching rules (§4.7)."""

from __future__ import annotations

import random

import pytest

from broker.routing import SubscriptionTree, filter_matches, is_valid_filter, is_valid_topic

CASES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),  # '#' includes the parent level
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("#", "$SYS/broker/clients", False),  # [MQTT-4.7.2-1]
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/broker/clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("dm/bob/+", "dm/bob/alice", True),
    ("dm/bob/+", "dm/alice/bob", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), CASES)
def test_tree_and_filter_matches_follow_the_spec(topic_filter: str, topic: str, expected: bool) -> None:
    tree = SubscriptionTree()
    tree.add(topic_filter, "c", 1)
    assert ("c" in tree.match(topic)) is expected
    assert filter_matches(topic_filter, topic) is expected


def test_overlapping_subscriptions_give_one_entry_at_the_highest_qos() -> None:
    tree = SubscriptionTree()
    tree.add("a/#", "c", 0)
    tree.add("a/+", "c", 2)
    tree.add("a/b", "c", 1)
    tree.add("a/b", "d", 0)
    assert tree.match("a/b") == {"c": 2, "d": 0}


def test_remove_prunes_and_resubscribe_replaces_qos() -> None:
    tree = SubscriptionTree()
    tree.add("a/b/c", "x", 0)
    tree.add("a/b/c", "x", 2)
    assert len(tree) == 1 and tree.match("a/b/c") == {"x": 2}
    assert tree.remove("a/b/c", "x")
    assert not tree.remove("a/b/c", "x")
    assert len(tree) == 0 and tree.match("a/b/c") == {}
    assert tree._root.children == {}


def test_tree_agrees_with_linear_scan_on_random_filters() -> None:
    rng = random.Random(7)
    words = ["a", "b", "c", "", "$x"]
    filters = set()
    for _ in range(300):
        levels = [rng.choice([*words, "+"]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            levels.append("#")
        filters.add("/".join(levels))
    tree = SubscriptionTree()
    for index, topic_filter in enumerate(sorted(filters)):
        tree.add(topic_filter, f"c{index}", index % 3)
    for _ in range(300):
        topic = "/".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
        expected = {f"c{i}": i % 3 for i, f in enumerate(sorted(filters)) if filter_matches(f, topic)}
        assert tree.match(topic) == expected, topic


@pytest.mark.parametrize("topic_filter", ["a/#", "#", "+", "a/+/b", "/", "$share/g/a/+", "$share/g/#", "$share/g//"])
def test_valid_filters(topic_filter: str) -> None:
    assert is_valid_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    ["", "a/#/b", "a#", "a/b+", "##", "a\x00b", "$share//a", "$share/g", "$share/g/", "$share/+/a", "$share/g#/a"],
)
def test_invalid_filters(topic_filter: str) -> None:
    assert not is_valid_filter(topic_filter)


def test_publish_topics_have_no_wildcards() -> None:
    assert is_valid_topic("a/b")
    assert not any(is_valid_topic(t) for t in ("", "a/+", "a/#", "a\x00"))


def test_tree_agrees_with_linear_scan_as_wildcard_filters_come_and_go() -> None:
    """Matching goes straight down the exact levels where no ``+`` or ``#`` branches off; adding and removing
    wildcard filters (and pruning their branches) must keep that shortcut right."""
    rng = random.Random(11)
    levels = ["a", "b", "+", "#", "$SYS"]
    tree = SubscriptionTree()
    held: dict[tuple[str, str], int] = {}
    for step in range(3000):
        depth = rng.randint(1, 3)
        parts = [rng.choice(levels[:4] if i else levels) for i in range(depth)]
        if "#" in parts:
            parts = parts[: parts.index("#") + 1]
        topic_filter, client = "/".join(parts), f"c{rng.randint(0, 3)}"
        if (topic_filter, client) in held and rng.random() < 0.5:
            assert tree.remove(topic_filter, client)
            del held[(topic_filter, client)]
        else:
            held[(topic_filter, client)] = rng.randint(0, 2)
            tree.add(topic_filter, client, held[(topic_filter, client)])
        topic = "/".join(rng.choice(["a", "b", "$SYS"] if i == 0 else ["a", "b"]) for i in range(rng.randint(1, 3)))
        expected: dict[str, int] = {}
        for (f, c), qos in held.items():
            if filter_matches(f, topic):
                expected[c] = max(expected.get(c, -1), qos)
        assert tree.match(topic) == expected, (step, topic)
