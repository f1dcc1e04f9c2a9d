"""Retained messages: the last retained message per topic, handed to new matching subscriptions.

An empty retained payload clears the topic [MQTT-3.3.1-10, -11]. Messages are kept in a tree of topic
levels, so a new subscription visits only the branches its filter can match: with a retained presence
message per user, ``dm/alice/+`` must not cost a look at every user's presence (a scan made connecting
10,000 subscribers quadratic). Filters starting with a wildcard do not match ``$`` topics [MQTT-4.7.2-1].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from broker.sessions import V5Properties


@dataclass(slots=True, frozen=True)
class Retained:
    """One retained message."""

    topic: str
    payload: bytes
    qos: int
    properties: V5Properties | None = None  # an MQTT 5 publisher's properties (kept in memory, not in the state file)


class _Level:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Level] = {}
        self.message: Retained | None = None


class RetainedStore:
    """Topic -> retained message, as a tree of topic levels."""

    def __init__(self) -> None:
        self._root = _Level()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def put(self, topic: str, payload: bytes, qos: int, properties: V5Properties | None = None) -> bool:
        """Keep (or, for an empty payload, clear) the topic's retained message; True when something changed."""
        if not payload:
            return self._clear(topic)
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Level()
            node = child
        if node.message is None:
            self._count += 1
        node.message = Retained(topic, payload, qos, properties)
        return True

    def _clear(self, topic: str) -> bool:
        path = [self._root]
        for level in topic.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].message is None:
            return False
        path[-1].message = None
        self._count -= 1
        levels = topic.split("/")
        for parent, level, node in zip(reversed(path[:-1]), reversed(levels), reversed(path[1:]), strict=True):
            if node.children or node.message is not None:
                break
            del parent.children[level]  # prune branches left empty
        return True

    def matching(self, topic_filter: str) -> Iterator[Retained]:
        """Retained messages whose topic matches ``topic_filter``."""
        yield from self._walk(self._root, topic_filter.split("/"), 0)

    def _walk(self, node: _Level, levels: list[str], index: int) -> Iterator[Retained]:
        if index == len(levels):
            if node.message is not None:
                yield node.message
            return
        level = levels[index]
        if level == "#":
            if node.message is not None and index > 0:  # "a/#" matches "a" itself
                yield node.message
            for name, child in list(node.children.items()):
                if not (index == 0 and name.startswith("$")):
                    yield from self._everything(child)
        elif level == "+":
            for name, child in list(node.children.items()):
                if not (index == 0 and name.startswith("$")):
                    yield from self._walk(child, levels, index + 1)
        else:
            named = node.children.get(level)
            if named is not None:
                yield from self._walk(named, levels, index + 1)

    def _everything(self, node: _Level) -> Iterator[Retained]:
        if node.message is not None:
            yield node.message
        for child in list(node.children.values()):
            yield from self._everything(child)

    def all(self) -> list[Retained]:
        return list(self._everything(self._root))
