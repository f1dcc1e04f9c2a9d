"""The bridge's MQTT connection: an MQTT 3.1.1 client of its own on an ``asyncio.Protocol``.

The bridge needs a small part of MQTT (CONNECT with a persistent session, one SUBSCRIBE, QoS 1 PUBLISH
both ways, PUBACK, PINGREQ) and needs it in batches, which no client library's public API offers: frames
are parsed from the bytes of each read, and every PUBLISH of one read reaches ``on_messages`` in one
list; the PUBACKs of a committed batch are packed into one buffer; whatever is queued in one event-loop
turn (PUBACKs, the ``ack/{sender}`` replies) leaves in one ``write``. Nothing is acknowledged by itself:
:meth:`BrokerConnection.ack` sends the PUBACKs, which the bridge does only after the messages'
transaction has committed.

Plain MQTT 3.1.1 (protocol level 4) to any broker (Switchboard's, Mosquitto, EMQX, ...), over TCP or TLS
(``ssl_context``). One connection per object: the bridge makes a new one (same client id, clean session 0) to
reconnect, so the broker's session carries what was not acknowledged. Keep-alive: a PINGREQ after
``keepalive`` seconds without sending [MQTT-3.1.2-23]; nothing read for another ``keepalive`` after it
(while reading) closes the connection. :meth:`BrokerConnection.hold_reading` stops reading, so a bridge
that cannot store leaves the messages queued at the broker. Errors are translated here:
:class:`BrokerUnavailable` (try again later) and :class:`SubscriptionRefused` (the broker said no to a
filter: trying again cannot help, the bridge exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Callable, Sequence
from typing import Any

from switchboard.errors import ConfigError, SwitchboardError
from switchboard.mqttwire import Malformed, connect_packet, fixed_header, remaining_length, subscribe_packet

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
DISCONNECT_TIMEOUT_SECONDS = 5.0
TICK_SECONDS = 1.0

# Packet types [MQTT-2.2.1] the bridge receives.
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13
PINGREQ_BYTES, DISCONNECT_BYTES = b"\xc0\x00", b"\xe0\x00"
SUBACK_FAILURE = 0x80
#: CONNACK return codes [MQTT-3.2.2.3], as a person reads them.
CONNACK_REFUSALS = {
    1: "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
    2: "client identifier rejected (bridge.client_id)",
    3: "server unavailable",
    4: "bad user name or password (bridge.username, bridge.password)",
    5: "not authorized",
}
MAX_PACKET_ID = 65535
MAX_CACHED_TOPICS = 10_000


class BrokerUnavailable(SwitchboardError):
    """The broker cannot be reached, refused the login, or went away: the bridge tries again later."""


class SubscriptionRefused(SwitchboardError):
    """The broker refused one of the bridge's subscriptions: the bridge would store nothing for it, and
    trying again cannot help. The message is one line: which filter, which account, what to check."""


def tls_context(enabled: bool, ca_file: str | None) -> ssl.SSLContext | None:
    """The TLS client context for the broker connection (certificate and host name verified), or None."""
    if not enabled:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"bridge.broker_ca_file = {ca_file!r} cannot be read as PEM CA certificates ({exc}): give the PEM file "
            "of the CA that signed the broker's certificate"
        ) from None


class Message:
    """One PUBLISH from the broker: what the store needs, and what its PUBACK needs."""

    __slots__ = ("packet_id", "payload", "qos", "retained", "topic")

    def __init__(self, topic: str, payload: bytes, retained: bool, qos: int, packet_id: int) -> None:
        self.topic = topic
        self.payload = payload
        self.retained = retained
        self.qos = qos
        self.packet_id = packet_id


class BrokerConnection(asyncio.Protocol):
    """One MQTT 3.1.1 connection with a persistent session, handing each read's PUBLISH packets to
    ``on_messages`` as one list. It is its own ``asyncio.Protocol``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        on_messages: Callable[[list[Message]], None],
        keepalive: int = 30,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port, self._username, self._password = host, port, username, password
        self._client_id, self._keepalive, self._ssl = client_id, keepalive, ssl_context
        self._tick_seconds = min(TICK_SECONDS, keepalive / 2) if keepalive else TICK_SECONDS
        self._loop = asyncio.get_running_loop()
        self._on_messages = on_messages
        self._rest = b""
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush: asyncio.Handle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._last_sent = self._ping_sent = self.last_received = 0.0
        self._packet_id = 0
        self._in_flight: set[int] = set()
        self._topic_names: dict[str, bytes] = {}
        """Packet ids of our QoS 1 PUBLISH packets the broker has not acknowledged yet."""
        self._connack: asyncio.Future[tuple[bool, int]] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        #: Packet ids of :meth:`publish_confirmed` not acknowledged yet: the set of its call, and its future.
        self._confirmations: dict[int, tuple[set[int], asyncio.Future[None]]] = {}
        self.closed: asyncio.Future[str] = self._loop.create_future()
        """Resolves with a reason when the connection is gone, however it went."""

    @property
    def where(self) -> str:
        return f"{self._host}:{self._port}"

    async def connect(self) -> None:
        """Open the connection, send CONNECT (clean session 0) and wait for the CONNACK;
        :class:`BrokerUnavailable` if it cannot be opened or the login is refused."""
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: self, self._host, self._port, ssl=self._ssl),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot connect to {self.where}: {exc or 'timed out'}") from exc
        login = (self._client_id, self._username, self._password)
        self._send(connect_packet(*login, keepalive=self._keepalive, clean=False))
        self._tick = self._loop.call_later(self._tick_seconds, self._keep_alive)
        try:
            _, code = await asyncio.wait_for(asyncio.shield(self._connack), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            self.abort()
            raise BrokerUnavailable(f"no CONNACK from {self.where} within {CONNECT_TIMEOUT_SECONDS:.0f}s") from None
        except BrokerUnavailable:
            self.abort()
            raise
        if code:
            self.abort()
            reason = CONNACK_REFUSALS.get(code, f"CONNACK return code {code}")
            raise BrokerUnavailable(f"{self.where} refused the login of {self._username!r}: {reason}")

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe to every filter in one SUBSCRIBE; :class:`SubscriptionRefused` naming the first refused."""
        packet_id = self._next_packet_id()
        suback = self._subacks[packet_id] = self._loop.create_future()
        self._send(subscribe_packet(filters, packet_id=packet_id))
        done, _ = await asyncio.wait(
            (suback, self.closed), timeout=CONNECT_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if suback not in done:
            reason = self.closed.result() if self.closed.done() else "no SUBACK"
            raise BrokerUnavailable(f"subscribing at {self.where}: {reason}")
        for (topic_filter, _), code in zip(filters, suback.result(), strict=False):
            if code == SUBACK_FAILURE:
                raise SubscriptionRefused(
                    f"the broker at {self.where} refused subscription {topic_filter} for account "
                    f"{self._username!r} (SUBACK {code:#04x}): log the bridge in as a service account the "
                    "broker lets subscribe to it (bridge.username, `switchboard user add NAME --role service`), "
                    "or give that account the filter in the broker's ACL; with bridge.shared_group the broker "
                    "must also support $share subscriptions"
                )

    def ack(self, messages: Sequence[Message]) -> None:
        """PUBACK the QoS 1 ``messages``: one buffer (a PUBACK is the 4-byte word 0x4002 + packet id),
        written with everything else queued in this event-loop turn."""
        words = [0x40020000 | m.packet_id for m in messages if m.qos]
        if words:
            self._queue(struct.pack(f"!{len(words)}I", *words))

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Queue a PUBLISH (QoS 0 or 1); its packet id (0 at QoS 0). A QoS 1 one counts as in flight until the
        broker's PUBACK; one not acknowledged when this connection ends is not sent again (the next
        connection is a new object)."""
        name = topic.encode()
        if qos:
            packet_id = self._next_packet_id()
            self._in_flight.add(packet_id)
            header = bytes((0x32,)) + remaining_length(4 + len(name) + len(payload))
            self._queue(b"".join((header, len(name).to_bytes(2, "big"), name, packet_id.to_bytes(2, "big"), payload)))
            return packet_id
        header = bytes((0x30,)) + remaining_length(2 + len(name) + len(payload))
        self._queue(b"".join((header, len(name).to_bytes(2, "big"), name, payload)))
        return 0

    def publish_confirmed(self, events: Sequence[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Queue one QoS 1 PUBLISH per ``(topic, payload)``, in order; the future resolves once the broker has
        acknowledged every one, or fails with :class:`BrokerUnavailable` if the connection ends first."""
        done: asyncio.Future[None] = self._loop.create_future()
        if self.closed.done():
            done.set_exception(BrokerUnavailable(f"{self.where}: {self.closed.result()}"))
            return done
        waiting = {self.publish(topic, payload, 1) for topic, payload in events}
        if not waiting:
            done.set_result(None)
        for packet_id in waiting:
            self._confirmations[packet_id] = (waiting, done)
        return done

    def publish_replies(self, replies: Sequence[tuple[str, bytes]]) -> None:
        """Queue one QoS 1 PUBLISH per ``(topic, payload)`` in one buffer, as :meth:`publish` would each.

        The encoded topic name (length prefix and UTF-8) is kept per topic, as the broker's PublishEncoder
        does: the bridge replies on the same ``ack/{sender}`` topics batch after batch."""
        names = self._topic_names
        if len(names) > MAX_CACHED_TOPICS:
            names.clear()
        in_flight, parts = self._in_flight, list[bytes]()
        append = parts.append
        for topic, payload in replies:
            name = names.get(topic)
            if name is None:
                encoded = topic.encode()
                name = names[topic] = len(encoded).to_bytes(2, "big") + encoded
            packet_id = self._next_packet_id()
            in_flight.add(packet_id)
            length = len(name) + 2 + len(payload)
            append(b"\x32" + remaining_length(length) if length > 127 else bytes((0x32, length)))
            append(name)
            append(packet_id.to_bytes(2, "big"))
            append(payload)
        if parts:
            self._queue(b"".join(parts))

    def hold_reading(self) -> None:
        """Read nothing more until :meth:`resume_reading`: the broker keeps what the bridge cannot take yet."""
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_reading() and not self._transport.is_closing():
            self.last_received = self._loop.time()  # the keep-alive's clock starts again
            self._transport.resume_reading()

    async def disconnect(self) -> None:
        """Send what is queued, then DISCONNECT, and wait (up to DISCONNECT_TIMEOUT_SECONDS) for the
        connection to close."""
        if self.closed.done() or self._transport is None:
            return
        self._queue(DISCONNECT_BYTES)
        self._write_out()
        self._transport.close()  # after the buffer is written
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), DISCONNECT_TIMEOUT_SECONDS)
        self.abort()

    def abort(self) -> None:
        """Close the connection at once, without DISCONNECT (the broker then sends the will, if any)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        self._close("closed by the bridge")

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(f"connection lost ({exc})" if exc else "the connection closed")

    def data_received(self, data: bytes) -> None:
        self.last_received = self._loop.time()
        if self._rest:
            data, self._rest = self._rest + data, b""
        messages: list[Message] = []
        take = messages.append
        position, size = 0, len(data)
        try:
            while position + 1 < size:
                first, length = data[position], data[position + 1]
                if length < 0x80:
                    start = position + 2
                else:
                    found = fixed_header(data, position)
                    if found is None:
                        break
                    length, header = found
                    start = position + header
                end = start + length
                if end > size:
                    break
                if first >> 4 == PUBLISH:
                    at = start + 2 + ((data[start] << 8) | data[start + 1])
                    topic = data[start + 2 : at].decode()
                    qos = (first >> 1) & 0x03
                    packet_id = 0
                    if qos:
                        packet_id = (data[at] << 8) | data[at + 1]
                        at += 2
                    if at > end:
                        raise Malformed("a PUBLISH whose topic is longer than the packet")
                    take(Message(topic, data[at:end], bool(first & 0x01), qos, packet_id))
                else:
                    self._control(first, data[start:end])
                position = end
        except (Malformed, IndexError, UnicodeDecodeError) as exc:
            self._lost(f"malformed packet from the broker: {exc}")
            return
        if position < size:
            self._rest = data[position:]
        if messages:
            self._on_messages(messages)

    def _control(self, first: int, body: bytes) -> None:
        """A packet other than PUBLISH."""
        kind = first >> 4
        if kind == PUBACK and len(body) == 2:
            packet_id = (body[0] << 8) | body[1]
            self._in_flight.discard(packet_id)
            if self._confirmations:
                self._confirm(packet_id)
        elif kind == CONNACK and len(body) == 2 and not self._connack.done():
            self._connack.set_result((bool(body[0] & 1), body[1]))
        elif kind == SUBACK and len(body) >= 2:
            future = self._subacks.pop((body[0] << 8) | body[1], None)
            if future is not None and not future.done():
                future.set_result(body[2:])
        elif kind == PINGRESP:
            self._ping_sent = 0.0
        else:
            raise Malformed(f"unexpected packet type {kind} (first byte {first:#04x}, {len(body)} bytes)")

    def _confirm(self, packet_id: int) -> None:
        found = self._confirmations.pop(packet_id, None)
        if found is not None:
            waiting, done = found
            waiting.discard(packet_id)
            if not waiting and not done.done():
                done.set_result(None)

    def _lost(self, reason: str) -> None:
        self._close(reason)
        self.abort()

    def _close(self, reason: str) -> None:
        for handle in (self._tick, self._flush):
            if handle is not None:
                handle.cancel()
        if not self.closed.done():
            self.closed.set_result(reason)
        confirmations, self._confirmations = self._confirmations, {}
        for _, done in confirmations.values():
            if not done.done():
                done.set_exception(BrokerUnavailable(f"{self.where}: {reason} before the PUBACK"))
                done.exception()  # retrieved: the caller may have given up waiting
        if not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(f"{self.where}: {reason} before CONNACK"))
            self._connack.exception()  # retrieved: nobody may be waiting any more

    # -- writing and keep-alive -------------------------------------------------------------------------

    def _next_packet_id(self) -> int:
        if len(self._in_flight) >= MAX_PACKET_ID - 1:
            raise BrokerUnavailable(f"{self.where} acknowledges none of the bridge's replies; reconnecting")
        packet_id = self._packet_id
        while True:
            packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._in_flight and packet_id not in self._subacks:
                self._packet_id = packet_id
                return packet_id

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if self._flush is None:
            self._flush = self._loop.call_soon(self._write_out)

    def _send(self, data: bytes) -> None:
        self._queue(data)
        self._write_out()

    def _write_out(self) -> None:
        self._flush = None
        out, self._out = self._out, []
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))
            self._last_sent = self._loop.time()

    def _keep_alive(self) -> None:
        """A PINGREQ whenever the next tick would come after ``keepalive`` seconds without sending (also while
        an earlier one is unanswered, which it stays while reading is held) [MQTT-3.1.2-23]."""
        now = self._loop.time()
        reading = self._transport is not None and self._transport.is_reading()
        if self._ping_sent and reading and now - max(self._ping_sent, self.last_received) > self._keepalive:
            self._lost(f"nothing from {self.where} for {self._keepalive}s after a PINGREQ")
            return
        if self._keepalive and now - self._last_sent + self._tick_seconds >= self._keepalive:
            self._send(PINGREQ_BYTES)
            self._ping_sent = self._ping_sent or now
        self._tick = self._loop.call_later(self._tick_seconds, self._keep_alive)
