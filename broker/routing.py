"""Topic matching: subscriptions in a tree of topic levels, so routing a message costs its depth, not the
number of subscriptions.

amqtt 0.12.1 matched every message against every subscription filter (O(filters) per message, and a
"dictionary changed size during iteration" crash when subscriptions changed during fan-out). Here a
message walks only the branches that can match: the exact level, ``+`` and ``#``.

Rules (MQTT 3.1.1 §4.7): ``+`` matches one whole level, ``#`` the rest including the parent level
("sport/#" matches "sport"), and filters starting with a wildcard do not match topics starting with
``$`` [MQTT-4.7.2-1].
"""

from __future__ import annotations

from switchboard.topics import split_shared

_WILDCARDS = ("+", "#")


class _Node:
    __slots__ = ("children", "subscribers", "wild")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}
        self.wild = 0  # how many of ``children`` are ``+`` or ``#`` (0 to 2)


class SubscriptionTree:
    """Which clients subscribe to which filters, at which QoS."""

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        """The number of (client, filter) subscriptions."""
        return self._count

    def add(self, topic_filter: str, client_id: str, qos: int) -> None:
        """Subscribe (or re-subscribe with a new QoS)."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
                if level in _WILDCARDS:
                    node.wild += 1
            node = child
        if client_id not in node.subscribers:
            self._count += 1
        node.subscribers[client_id] = qos

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Unsubscribe; False when there was no such subscription. Empty branches are pruned."""
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.subscribers.pop(client_id, None) is None:
            return False
        self._count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
            if level in _WILDCARDS:
                parent.wild -= 1
        return True

    def match(self, topic: str) -> dict[str, int]:
        """Every client with a filter matching ``topic``, with the highest QoS among its matching filters."""
        levels = topic.split("/")
        last = len(levels)
        node, depth = self._root, 0
        while not node.wild:  # down the exact levels while no + or # branches off: nothing else can match
            if depth == last:
                return dict(node.subscribers)
            found_child = node.children.get(levels[depth])
            if found_child is None:
                return {}
            node, depth = found_child, depth + 1
        found: dict[str, int] = {}
        dollar = topic.startswith("$")
        stack: list[tuple[_Node, int]] = [(node, depth)]
        while stack:
            node, depth = stack.pop()
            if depth == last:
                _merge(found, node.subscribers)
                hash_node = node.children.get("#")
                if hash_node is not None:
                    _merge(found, hash_node.subscribers)
                continue
            if depth > 0 or not dollar:
                hash_node = node.children.get("#")
                if hash_node is not None:
                    _merge(found, hash_node.subscribers)
                plus = node.children.get("+")
                if plus is not None:
                    stack.append((plus, depth + 1))
            child = node.children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
        return found


def _merge(found: dict[str, int], subscribers: dict[str, int]) -> None:
    for client_id, qos in subscribers.items():
        if found.get(client_id, -1) < qos:
            found[client_id] = qos


def filter_matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic_filter`` matches ``topic`` (used for retained messages)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def is_valid_filter(topic_filter: str) -> bool:
    """A well-formed filter (see :func:`filter_problem`)."""
    return filter_problem(topic_filter) is None


def filter_problem(topic_filter: str) -> str | None:
    """What is wrong with a SUBSCRIBE's filter, None when nothing is: not empty, no NUL, ``#`` only as a whole
    last level, ``+`` only as whole levels [MQTT-4.7.1]; a shared subscription ``$share/{group}/{filter}``
    needs a group without wildcards and a well-formed filter after it [MQTT-4.8.2-1, MQTT-4.8.2-2]."""
    try:
        shared = split_shared(topic_filter)
    except ValueError as exc:
        return str(exc)
    if shared is not None:
        problem = _plain_filter_problem(shared[1])
        return None if problem is None else f"in shared subscription {topic_filter!r}: {problem}"
    return _plain_filter_problem(topic_filter)


def _plain_filter_problem(topic_filter: str) -> str | None:
    if not topic_filter:
        return "a topic filter may not be empty [MQTT-4.7.3-1]"
    if "\x00" in topic_filter:
        return "a topic filter may not hold NUL [MQTT-1.5.3-2]"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"{topic_filter!r}: '#' must be a whole level, the last one [MQTT-4.7.1-2]"
        if "+" in level and level != "+":
            return f"{topic_filter!r}: '+' must be a whole level [MQTT-4.7.1-3]"
    return None


def is_valid_topic(topic: str) -> bool:
    """A topic a client may publish to: not empty, no wildcards [MQTT-3.3.2-2], no NUL [MQTT-1.5.3-2]."""
    return bool(topic) and not any(char in topic for char in "+#\x00")
