"""The broker's door (issue 16 §1, §3): every chat message is checked before it is routed, with the same domain
code the bridge stores it with, so a message is either delivered live and stored, or refused and delivered to
no one.

A chat message is a PUBLISH on ``dm/`` or ``group/``. In order:

1. the ACL (switchboard.acl): the sender's own topic, an existing recipient or a group it belongs to, a recipient
   that did not block it, ``chat.dm_policy``: refused as 0x87 "not authorized";
2. the sender's rate (``mqtt.publish_rate`` per second, ``mqtt.publish_burst`` at once, per user, service accounts
   exempt): 0x97 "quota exceeded";
3. the payload (``switchboard.payloads.parse_chat``: JSON shape, sizes, the relation rules that need no
   database): 0x99 "payload format invalid". A service account's message (the bridge publishing an unsend
   made through REST on the unsent message's topic) is checked as if the topic's sender had published it.

A PUBACK/PUBREC may carry only the reason codes of MQTT 5.0 §3.4.2.1 (0x96 "message rate too high" and 0x95
"packet too large" are DISCONNECT and CONNACK codes; paho-mqtt closes the connection on a PUBACK with either), so
a refused message's code is one of 0x87, 0x97 and 0x99, and the reason string says which limit it met.

A refused message gets a notice on ``ack/{sender}``: ``{"id": <client id or null>, "conversation": ...,
"error": ...}`` (``switchboard.payloads.refusal_payload``), for MQTT 3.1.1 and 5 clients alike; an MQTT 5
client also gets the reason code in its PUBACK/PUBREC (broker.publish_v5). Each refusal is logged and counted
(``switchboard_broker_messages_refused{reason}``). Checking costs a dictionary look-up for the rate and one JSON
parse of the payload, on the connection's own turn: a bad client slows only itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.codec_v5 import Reason
from switchboard.acl import Decision
from switchboard.payloads import Rejection, claimed_id, parse_chat, refusal_payload
from switchboard.ratelimit import TokenBuckets
from switchboard.topics import ack_topic, dm_conversation, group_conversation

if TYPE_CHECKING:
    from broker.hub import Hub
    from broker.principal import Principal

log = logging.getLogger(__name__)

#: The topics whose messages pass the door.
MESSAGE_TOPICS = ("dm/", "group/")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a chat message was refused: the MQTT 5 reason code, the metric's label and a reason a person can read."""

    code: int
    label: str
    reason: str


#: Why a service account's chat message other than an unsend made through REST is refused.
_SERVICE_CHAT = "a service account publishes on chat topics only the unsends made through REST"


class Door:
    """The checks of one broker's chat messages and its users' token buckets (the counters are the hub's stats)."""

    def __init__(self, hub: Hub, *, rate: float, burst: int) -> None:
        self._hub = hub
        self._buckets = TokenBuckets(rate, burst)
        self._rate = rate

    def check(self, principal: Principal, topic: str, payload: bytes, decision: Decision) -> Refusal | None:
        """None when the chat message on ``topic`` may be routed (the ACL's ``decision`` allowed it, the sender is
        within its rate, the payload is a valid message); else why not."""
        if not decision.allowed:
            return Refusal(Reason.NOT_AUTHORIZED, "not_authorized", decision.reason)
        user = principal.username
        assert user is not None  # chat topics need a login (switchboard.acl)
        who = self._hub.access.identity(principal)
        if who is not None and who.is_service:  # an unsend made through REST, on its target's topic: checked as
            message = parse_chat(payload, topic.rsplit("/", 1)[1])  # its sender's (no rate, no DM bookkeeping)
            if isinstance(message, Rejection):
                return Refusal(Reason.PAYLOAD_FORMAT_INVALID, "payload", message.reason)
            if message.relates_to is None or message.relates_to.kind != "unsend":
                return Refusal(Reason.NOT_AUTHORIZED, "not_authorized", _SERVICE_CHAT)
            return None
        if not self._buckets.take(user, time.monotonic()):
            return Refusal(
                Reason.QUOTA_EXCEEDED,
                "rate",
                f"too many messages: at most {self._rate:g} a second (mqtt.publish_rate); send this one again later",
            )
        message = parse_chat(payload, user)
        if isinstance(message, Rejection):
            return Refusal(Reason.PAYLOAD_FORMAT_INVALID, "payload", message.reason)
        if topic[0] == "d":  # a DM let through: the two now share a conversation (presence, dm_policy)
            self._hub.access.dm_sent(user, topic.split("/", 2)[1])
        return None

    def refuse(self, principal: Principal, topic: str, payload: bytes, refusal: Refusal) -> None:
        """Count and log the refusal, and tell the sender on ``ack/{sender}`` (when the topic names a conversation)."""
        self._hub.stats.refused[refusal.label] += 1
        user = principal.username
        log.warning(
            "refused a message from client_id=%s user=%s on %r: %s",
            principal.client_id,
            user,
            topic,
            refusal.reason,
            extra={"client_id": principal.client_id, "user": user, "topic": topic},
        )
        conversation = _conversation(topic)
        if user is None or conversation is None:
            return
        self._hub.notify(ack_topic(user), refusal_payload(claimed_id(payload), conversation, refusal.reason))


def _conversation(topic: str) -> str | None:
    """The conversation a dm/ or group/ topic names (its last level is the sender); None when it names none."""
    levels = topic.split("/")
    if len(levels) != 3 or not levels[1] or not levels[2]:
        return None
    if levels[0] == "dm":
        return dm_conversation(levels[1], levels[2])
    return group_conversation(levels[1])
