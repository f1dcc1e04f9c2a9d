"""Topic aliases [MQTT 5.0 §3.3.2.3.4]: a PUBLISH may name its topic by a number set earlier on the same
connection, in both directions.

- CONNACK announces Topic Alias Maximum ``MAXIMUM`` (16): a client may use aliases 1..16.
- A PUBLISH with a topic and an alias sets (or replaces) that alias for this connection [MQTT-3.3.2-12]; one with
  an empty topic and an alias is sent to the alias's topic. The mapping lives as long as the connection, never
  in the session [MQTT-3.3.2-7].
- Alias 0 or over the maximum: DISCONNECT 0x94 "topic alias invalid" [MQTT-3.3.2-8, MQTT-3.3.2-9]; an empty
  topic with an alias never set: DISCONNECT 0x82 "protocol error" [MQTT 5.0 §3.3.4].
- From broker to client, when the client's CONNECT gives a Topic Alias Maximum: the first topics sent to it
  (as many as that maximum, never more [MQTT-3.3.2-11]) get aliases 1, 2, ...; the first PUBLISH on such a
  topic carries topic and alias, the later ones an empty topic and the alias. Aliases are not reassigned: a
  topic past the maximum goes with its name. A client that gives no maximum gets no aliases.
"""

from __future__ import annotations

from broker.codec import ProtocolViolation
from broker.codec_v5 import Reason
from broker.properties import P, encode_varint

#: The Topic Alias Maximum the broker announces in CONNACK [MQTT 5.0 §3.2.2.3.8].
MAXIMUM = 16


class AliasError(ProtocolViolation):
    """A PUBLISH used a topic alias wrongly; ``code`` is the DISCONNECT reason to send."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def resolve(aliases: dict[int, str], alias: int, topic: str) -> str:
    """The topic of a PUBLISH carrying Topic Alias ``alias``: ``topic`` (then remembered under ``alias``), or for
    an empty ``topic`` the one the alias was set to."""
    if not 0 < alias <= MAXIMUM:
        raise AliasError(
            f"Topic Alias {alias}: it must be 1 to {MAXIMUM}, the broker's Topic Alias Maximum [MQTT-3.3.2-8, -9]",
            Reason.TOPIC_ALIAS_INVALID,
        )
    if topic:
        aliases[alias] = topic
        return topic
    known = aliases.get(alias)
    if known is None:
        raise AliasError(
            f"PUBLISH with an empty topic and Topic Alias {alias}, which this connection never set: send the topic "
            "with the alias first [MQTT 5.0 §3.3.4]",
            Reason.PROTOCOL_ERROR,
        )
    return known


_FIELD = encode_varint(P.TOPIC_ALIAS)


def outgoing(sent: dict[str, int], maximum: int, topic: str) -> tuple[str, int | None, bytes]:
    """How to send ``topic`` to a client that accepts ``maximum`` aliases, ``sent`` those it knows: (the topic
    name to write, empty when the alias stands for it; the alias, when a new one is to be recorded by the caller
    once the packet goes out, or the known one; its property field)."""
    known = sent.get(topic)
    if known is not None:
        return "", known, _FIELD + known.to_bytes(2, "big")
    if len(sent) >= maximum:
        return topic, None, b""
    alias = len(sent) + 1
    return topic, alias, _FIELD + alias.to_bytes(2, "big")
