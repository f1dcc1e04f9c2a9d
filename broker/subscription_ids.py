"""Subscription identifiers [MQTT 5.0 §3.8.2.1.2, §3.3.4]: the identifier a SUBSCRIBE gives is kept with each of
its subscriptions (in the session's ``SessionV5.ids``), and every PUBLISH delivered through one carries it.

- CONNACK announces Subscription Identifier Available 1.
- A SUBSCRIBE's identifier applies to each of its filters; a SUBSCRIBE without one removes the identifier of a
  subscription it replaces [MQTT-3.8.4-3 replaces the subscription whole]; UNSUBSCRIBE forgets it.
- An identifier of 0 is a protocol error (``broker.properties.decode``: DISCONNECT 0x82) [MQTT-3.8.2-1]; a
  client may not send one in PUBLISH [MQTT-3.3.4-6].
- A message delivered through a shared subscription carries that subscription's identifier only; one delivered
  through the session's other subscriptions carries the identifier of each of them it matches
  [MQTT-3.3.4-3, MQTT-3.3.4-4, MQTT-3.3.4-5] (one copy, as for 3.1.1, with every matching identifier).
- Identifiers live as long as the session; a persistent session's are kept in the state file with its
  subscriptions, so they hold after a broker restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.properties import P, encode_varint
from broker.routing import filter_matches
from switchboard.topics import split_shared

if TYPE_CHECKING:
    from broker.sessions import Outgoing, Session

_FIELD = encode_varint(P.SUBSCRIPTION_IDENTIFIER)


def remember(session: Session, topic_filter: str, identifier: int | None) -> None:
    """Keep (or, with None, forget) the identifier of ``session``'s subscription to ``topic_filter``."""
    from broker.v5 import session_state  # the module that imports this one

    if identifier is not None:
        session_state(session).ids[topic_filter] = identifier
    elif session.v5 is None or session.v5.ids.pop(topic_filter, None) is None:
        return
    if session.journal is not None and not session.clean and topic_filter in session.subscriptions:
        session.journal.subscription_identifier(session.client_id, topic_filter, identifier)


def fields(session: Session, message: Outgoing) -> bytes:
    """The Subscription Identifier property fields for ``message`` as delivered to ``session`` (empty: none)."""
    state = session.v5
    if state is None or not state.ids:
        return b""
    ids = state.ids
    if message.share is not None:
        found = ids.get(message.share)
        return b"" if found is None else _FIELD + encode_varint(found)
    out = b""
    for topic_filter, identifier in ids.items():
        if split_shared(topic_filter) is None and filter_matches(topic_filter, message.topic):
            out += _FIELD + encode_varint(identifier)
    return out
