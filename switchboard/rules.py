"""The operator's ACL rules for topics outside the chat scheme (``mqtt.acl_rules``).

Checked in order; the first rule whose pattern matches decides; no match means deny. ``%u`` in a
pattern is the client's username (a rule with ``%u`` never matches an anonymous client), ``%c`` its
client id. A ``subscribe`` rule also governs delivery: a message reaches a subscriber only if a
subscribe rule would let it subscribe to that exact topic, so "allow #" with "deny secret/#" before
it never leaks ``secret/...`` to a ``#`` subscriber.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class RuleAction(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class OperatorRule:
    """allow|deny, publish|subscribe|all, and a topic pattern (MQTT filter syntax, with %u and %c)."""

    allow: bool
    action: RuleAction
    topic: str

    def applies_to(self, *, subscribing: bool) -> bool:
        return self.action is RuleAction.ALL or self.action is (
            RuleAction.SUBSCRIBE if subscribing else RuleAction.PUBLISH
        )

    def pattern_for(self, username: str | None, client_id: str) -> str | None:
        """The pattern with %u and %c filled in; None when it cannot apply to this client."""
        pattern = self.topic
        if "%u" in pattern:
            if username is None:
                return None
            pattern = pattern.replace("%u", username)
        if "%c" in pattern:
            if not client_id or any(char in client_id for char in "/+#"):
                return None
            pattern = pattern.replace("%c", client_id)
        return pattern


def decide(
    rules: Sequence[OperatorRule], *, subscribing: bool, username: str | None, client_id: str, topic: str
) -> tuple[bool, str]:
    """(allowed, reason) for a topic (publish, receive) or a filter (subscribe)."""
    for index, rule in enumerate(rules, start=1):
        if not rule.applies_to(subscribing=subscribing):
            continue
        pattern = rule.pattern_for(username, client_id)
        if pattern is not None and covers(pattern, topic):
            verb = "allows" if rule.allow else "denies"
            return rule.allow, f"mqtt.acl_rules[{index}] ({rule.topic}) {verb} it"
    return False, "no rule in mqtt.acl_rules matches"


def covers(pattern: str, topic: str) -> bool:
    """True when every topic that ``topic`` (a name or a filter) can name is matched by ``pattern``."""
    pattern_levels = pattern.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    for index, level in enumerate(pattern_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        wanted = topic_levels[index]
        if wanted == "#":
            return False  # the filter reaches further than the pattern
        if level != "+" and level != wanted:
            return False
    return len(pattern_levels) == len(topic_levels)
