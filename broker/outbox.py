"""The writing side a session sees (``broker.sessions.Outbox``): its deliveries encoded for the client's protocol
level, and back-pressure when the client stops reading.

:class:`SessionOutbox` is the part of a connection (``broker.connection.Connection``) that a session sends
through. A client that stops reading (its transport calls ``pause_writing``) gets no QoS 0 messages (dropped and
counted) and the client whose PUBLISH is being routed to it (:data:`ROUTING`) is paused until it drains; its
QoS 1/2 messages are written and wait in its transport as always. An MQTT 5 client gets its messages through
``broker.v5`` (properties, topic aliases, expiry, Maximum Packet Size); a 3.1.1 client gets an expired MQTT 5
message skipped [MQTT-3.3.2-5].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker import v5
from broker.close import Close
from broker.codec import PUBREL_BYTE, PublishEncoder, encode_ack
from broker.sessions import Outgoing, Session
from broker.transport import FramedProtocol

if TYPE_CHECKING:
    from broker.hub import Hub
    from broker.v5 import V5State


class _Routing:
    """The connection whose PUBLISH is being routed now: the one to pause if a recipient stops reading.
    (An instance, not the class: setting a class attribute twice a packet would reset the type's caches.)"""

    __slots__ = ("source",)

    def __init__(self) -> None:
        self.source: FramedProtocol | None = None


ROUTING = _Routing()
_ENCODER = PublishEncoder()


class SessionOutbox(FramedProtocol):
    """What a session writes through; the connection sets ``hub``, ``session``, ``v5`` and ``close_state``."""

    __slots__ = ("close_state", "hub", "session", "v5")

    hub: Hub
    session: Session | None
    v5: V5State | None
    close_state: Close

    def send_publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None:
        if self.close_state is not Close.OPEN:
            return
        if self.write_paused:
            source = ROUTING.source
            if source is not None and source is not self:
                self.hold_publisher(source)
            if message.qos == 0:
                self.hub.stats.dropped_qos0 += 1  # QoS 0 may be lost; memory may not grow
                return
        if self.v5 is not None:
            data = v5.publish_bytes(self.v5, self.session, message, packet_id, dup)
            if data is None:  # expired, over the client's Maximum Packet Size, or No Local (broker.v5)
                self.loop.call_soon(v5.skip_undeliverable, self.session, packet_id)
                return
            self.write(data)
            return
        if message.properties is not None and v5.expired(message.properties):  # [MQTT-3.3.2-5]
            self.loop.call_soon(v5.skip_undeliverable, self.session, packet_id)
            return
        self.write(
            _ENCODER.encode(message.topic, message.payload, message.qos, packet_id, dup=dup, retain=message.retain)
        )

    def send_pubrel(self, packet_id: int) -> None:
        if self.close_state is Close.OPEN:
            self.write(encode_ack(PUBREL_BYTE, packet_id))
