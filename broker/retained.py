"""Retained messages: the last retained message per topic, handed to new matching subscriptions.

An empty retained payload clears the topic [MQTT-3.3.1-10, -11].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from broker.routing import filter_matches


@dataclass(slots=True, frozen=True)
class Retained:
    """One retained message."""

    topic: str
    payload: bytes
    qos: int


class RetainedStore:
    """Topic -> retained message."""

    def __init__(self) -> None:
        self._messages: dict[str, Retained] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, topic: str, payload: bytes, qos: int) -> bool:
        """Keep (or, for an empty payload, clear) the topic's retained message; True when something changed."""
        if not payload:
            return self._messages.pop(topic, None) is not None
        self._messages[topic] = Retained(topic, payload, qos)
        return True

    def matching(self, topic_filter: str) -> Iterator[Retained]:
        """Retained messages whose topic matches ``topic_filter``."""
        if "+" not in topic_filter and "#" not in topic_filter:
            exact = self._messages.get(topic_filter)
            if exact is not None:
                yield exact
            return
        for message in list(self._messages.values()):
            if filter_matches(topic_filter, message.topic):
                yield message

    def all(self) -> list[Retained]:
        return list(self._messages.values())
