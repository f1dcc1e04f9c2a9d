"""One client's MQTT 3.1.1 connection: CONNECT, the packet loop, keep-alive, and writing.

Replaces amqtt 0.12.1's per-connection handler (a task per packet, fixed 5 s acknowledgement timeouts,
keep-alive never enforced: upstream #308), keeping amqtt's listeners and packet codec. Any protocol
violation closes this connection with a log line naming the client and the rule; nothing a client
sends can harm another client or the broker.

- The first packet must be a CONNECT within ``connect_timeout`` [MQTT-3.1.0-1]; a second CONNECT is a
  violation [MQTT-3.1.0-2].
- Credentials are checked before any session is touched; a client id that belongs to another user's
  session is refused with CONNACK 0x02.
- A client silent for 1.5 x its keep-alive is disconnected and its will published [MQTT-3.1.2-24].
- Packets larger than ``max_packet_bytes`` are refused before their body is read.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from amqtt.adapters import BufferReader, ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt import packet_dict
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.unsuback import UnsubackPacket

from broker.codec import check_strings, encode_publish
from broker.conformance import rejected_client_id, violation
from broker.hub import Hub
from broker.principal import Principal
from broker.routing import filter_problem, is_valid_topic
from broker.sessions import Outgoing, Session, Will
from switchboard import logs
from switchboard.acl import Action
from switchboard.payloads import Rejection, stamp_presence
from switchboard.topics import is_ephemeral

log = logging.getLogger(__name__)

KEEPALIVE_GRACE = 1.5
SLOW_CONSUMER_BYTES = 8 * 1024 * 1024
SUBACK_FAILURE = 0x80


class ProtocolViolation(Exception):
    """The client broke MQTT 3.1.1; the connection is closed with this reason."""


class Gate(Protocol):
    """Authentication and the ACL, as the plugins implement them."""

    async def authenticate(self, principal: Principal) -> bool: ...

    async def may(self, principal: Principal, topic: str, action: Action) -> bool: ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection bounds from settings."""

    max_packet_bytes: int = 256 * 1024
    max_subscriptions: int = 1000
    connect_timeout: float = 10.0


class Connection:
    """Serves one network connection until it closes."""

    def __init__(
        self, *, hub: Hub, gate: Gate, reader: ReaderAdapter, writer: WriterAdapter, limits: ConnectionLimits
    ) -> None:
        self._hub = hub
        self._gate = gate
        self._reader = reader
        # TCP and TLS: read the asyncio stream under amqtt's adapter directly; WebSocket: through the adapter.
        inner = getattr(reader, "_reader", None)
        self._stream: asyncio.StreamReader | None = inner if isinstance(inner, asyncio.StreamReader) else None
        self._writer = writer
        self._limits = limits
        info = writer.get_peer_info()
        self.peer = f"{info[0]}:{info[1]}" if info else "unknown peer"
        self._address: str | None = str(info[0]) if info else None
        self.session: Session | None = None
        self._principal: Principal | None = None
        self._will: Will | None = None
        self._keep_alive = 0
        self._loop = asyncio.get_running_loop()
        self._last_seen = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._dirty = asyncio.Event()
        self._closing = False
        self._aborted = False
        self._taken_over = False
        self._shutting_down = False
        self._revoked = False
        self._clean_disconnect = False
        self._reason = "connection closed by the client"
        self._finished = asyncio.Event()
        # TCP writes go straight to the socket; the WebSocket adapter buffers until drain().
        self._needs_drain = not isinstance(writer, StreamWriterAdapter)
        self._transport = _transport(writer)

    # Life cycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        logs.bind(peer=self.peer)  # this task serves one connection: its records say which
        flusher = asyncio.create_task(self._flush_forever())
        try:
            if await self._handshake():
                await self._serve()
        except ProtocolViolation as exc:
            self._reason = str(exc)
        except (NoDataError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except TimeoutError:
            self._reason = "no CONNECT within the connect timeout [MQTT-3.1.0-1]"
        except MQTTError as exc:
            self._reason = f"malformed packet: {exc}"
        except Exception:  # one client's failure must never reach the broker or other clients
            log.exception(
                "client_id=%s from %s: unexpected error; closing its connection",
                self.session.client_id if self.session else None,
                self.peer,
            )
            self._reason = "internal error (logged)"
        finally:
            if self._timer is not None:
                self._timer.cancel()
            await self._end()
            flusher.cancel()
            self._finished.set()

    async def _end(self) -> None:
        session, self._closing = self.session, True
        if session is not None and session.outbox is self:
            abnormal = not (self._clean_disconnect or self._taken_over or self._shutting_down or self._revoked)
            level = logging.WARNING if abnormal and self._reason != "connection closed by the client" else logging.INFO
            log.log(
                level,
                "client_id=%s user=%s from %s disconnected: %s",
                session.client_id,
                session.username,
                self.peer,
                self._reason,
            )
            await self._hub.disconnected(session, will=self._will if abnormal else None, announce=not self._taken_over)
        elif session is None and self._reason != "connection closed by the client":
            log.warning("refused connection from %s: %s", self.peer, self._reason)
        if self._aborted:
            return
        try:
            await asyncio.wait_for(self._writer.drain(), 2)  # a refusal's CONNACK, or the last acks
        except Exception:  # the peer may already be gone; closing is all that is left
            log.debug("flushing %s failed", self.peer, exc_info=True)
        _close(self._writer, abort=False)

    async def take_over(self) -> None:
        """Another connection with this client id arrived [MQTT-3.1.4-2]: close this one, no will."""
        self._taken_over = True
        self.abort("taken over by a new connection with the same client id")
        await self._finished.wait()

    def close_for_shutdown(self) -> None:
        """The broker is stopping: close without publishing the will (the client did nothing wrong);
        presence still goes offline."""
        self._shutting_down = True
        self.abort("broker shutting down")

    def revoke(self, reason: str) -> None:
        """An administrator disabled or deleted the user, or reset its password: close without the will
        (it was the user's, and the user no longer speaks here); presence still goes offline."""
        self._revoked = True
        self.abort(reason)

    async def finished(self) -> None:
        """Wait until this connection has been cleaned up."""
        await self._finished.wait()

    def abort(self, reason: str) -> None:
        """Close now (keep-alive expiry, broker shutdown); the will is published."""
        self._reason = reason
        self._aborted = True
        _close(self._writer, abort=True)

    # Reading --------------------------------------------------------------------------------------

    async def _read_frame(self, *, first: bool = False) -> tuple[MQTTFixedHeader, bytes] | None:
        """One packet's fixed header and body, not decoded (None at the end of the stream)."""
        header = await (
            self._read_header_tcp() if self._stream is not None else MQTTFixedHeader.from_stream(self._reader)
        )
        if header is None:
            return None
        if first and header.packet_type != CONNECT:
            raise ProtocolViolation("the first packet must be a CONNECT [MQTT-3.1.0-1]")
        if header.remaining_length > self._limits.max_packet_bytes:
            raise ProtocolViolation(
                f"packet of {header.remaining_length} bytes is over the limit of {self._limits.max_packet_bytes} "
                "(mqtt.max_packet_bytes)"
            )
        if header.packet_type not in packet_dict:
            raise ProtocolViolation(f"reserved packet type {header.packet_type}")
        if not header.remaining_length:
            body = b""
        elif self._stream is not None:
            body = await self._stream.readexactly(header.remaining_length)
        else:
            body = await self._reader.read(header.remaining_length)
        if len(body) < header.remaining_length:
            return None
        try:
            check_strings(header.packet_type, body)
        except Exception as exc:
            raise ProtocolViolation(f"malformed {packet_dict[header.packet_type].__name__}: {exc}") from None
        reason = violation(header.packet_type, header.flags, body)
        if reason is not None:
            raise ProtocolViolation(reason)
        return header, body

    async def _read_header_tcp(self) -> MQTTFixedHeader | None:
        """The fixed header straight from the TCP stream: one read for the type byte and the first length
        byte (every packet has both), one more per further length byte. amqtt's decoder awaits its adapter
        byte by byte. None at the end of the stream."""
        assert self._stream is not None
        try:
            head = await self._stream.readexactly(2)
        except asyncio.IncompleteReadError:
            return None
        byte, length, multiplier = head[1], head[1] & 0x7F, 128
        while byte & 0x80:
            if multiplier > 128**3:
                raise ProtocolViolation("malformed remaining length: more than 4 bytes [MQTT-2.2.3]")
            byte = (await self._stream.readexactly(1))[0]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
        return MQTTFixedHeader(head[0] >> 4, head[0] & 0x0F, length)

    # CONNECT --------------------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        frame = await asyncio.wait_for(self._read_frame(first=True), self._limits.connect_timeout)
        if frame is None:
            return False
        refused = rejected_client_id(frame[1])  # amqtt's decoder would replace an empty id with a random one
        if refused is not None:
            self._send(ConnackPacket.build(0, IDENTIFIER_REJECTED))
            raise ProtocolViolation(refused)
        packet = await _decode(*frame)
        if not isinstance(packet, ConnectPacket):
            raise ProtocolViolation("the first packet must be a CONNECT [MQTT-3.1.0-1]")
        if packet.proto_name != "MQTT":
            raise ProtocolViolation(f"unknown protocol name {packet.proto_name!r} [MQTT-3.1.2-1]")
        if packet.proto_level != 4:
            self._send(ConnackPacket.build(0, UNACCEPTABLE_PROTOCOL_VERSION))
            raise ProtocolViolation(
                f"protocol level {packet.proto_level}: only MQTT 3.1.1 (4) is served [MQTT-3.1.2-2]"
            )
        if packet.variable_header.reserved_flag:
            raise ProtocolViolation("CONNECT reserved flag is set [MQTT-3.1.2-3]")
        if packet.password_flag and not packet.username_flag:
            self._send(ConnackPacket.build(0, BAD_USERNAME_PASSWORD))
            raise ProtocolViolation("password without a username [MQTT-3.1.2-22]")
        client_id = packet.client_id or ""
        clean = bool(packet.clean_session_flag)
        if not client_id:
            if not clean:
                self._send(ConnackPacket.build(0, IDENTIFIER_REJECTED))
                raise ProtocolViolation("empty client id with clean_session=0 [MQTT-3.1.3-8]")
            client_id = f"auto-{uuid.uuid4().hex}"
        if packet.will_flag:
            if packet.will_qos not in (0, 1, 2) or not is_valid_topic(packet.will_topic or ""):
                raise ProtocolViolation(f"invalid will (topic {packet.will_topic!r}, qos {packet.will_qos})")
            self._will = Will(
                packet.will_topic, bytes(packet.will_message or b""), packet.will_qos, bool(packet.will_retain_flag)
            )

        principal = Principal()
        principal.client_id = client_id
        principal.username = packet.username if packet.username_flag else None
        principal.password = packet.password if packet.password_flag else None
        principal.clean_session = clean
        principal.keep_alive = packet.keep_alive
        principal.will_flag = bool(packet.will_flag)
        principal.will_topic = packet.will_topic if packet.will_flag else None
        principal.address = self._address
        self._principal = principal
        if not await self._gate.authenticate(principal):
            self._hub.stats.auth_failures += 1
            self._send(ConnackPacket.build(0, NOT_AUTHORIZED))
            raise ProtocolViolation(f"not authorized (client_id={client_id!r}, user={principal.username!r})")
        principal.password = None  # not needed past this point; do not keep it in memory

        existing = self._hub.sessions.get(client_id)
        if existing is not None and existing.username != principal.username:
            self._send(ConnackPacket.build(0, IDENTIFIER_REJECTED))
            raise ProtocolViolation(f"client id {client_id!r} belongs to another user's session")
        if existing is not None and isinstance(existing.outbox, Connection):
            await existing.outbox.take_over()

        session, present = self._hub.open_session(client_id, principal.username, clean=clean, principal=principal)
        self.session = session
        logs.bind(client_id=client_id, user=principal.username)
        self._keep_alive = packet.keep_alive or 0
        self._send(ConnackPacket.build(1 if present else 0, 0))
        session.attach(self)
        await self._hub.connected(session)
        self._arm_keepalive()
        log.info(
            "client_id=%s user=%s connected from %s (clean_session=%d, keep_alive=%ds, resumed=%s)",
            client_id,
            principal.username,
            self.peer,
            clean,
            self._keep_alive,
            present,
        )
        return True

    # Keep-alive -----------------------------------------------------------------------------------

    def _arm_keepalive(self, delay: float | None = None) -> None:
        if self._keep_alive > 0:
            self._timer = self._loop.call_later(
                delay if delay is not None else self._keep_alive * KEEPALIVE_GRACE, self._check_keepalive
            )

    def _check_keepalive(self) -> None:
        limit = self._keep_alive * KEEPALIVE_GRACE
        idle = self._loop.time() - self._last_seen
        if idle >= limit:
            self.abort(f"silent for {idle:.1f}s, over 1.5 x keep-alive ({self._keep_alive}s) [MQTT-3.1.2-24]")
        else:
            self._arm_keepalive(limit - idle)

    # The packet loop ------------------------------------------------------------------------------

    async def _serve(self) -> None:
        session = self.session
        assert session is not None
        # PUBLISH and the acknowledgements are decoded here, straight from the bytes: they are nearly all of
        # the traffic, and amqtt's codec builds several objects and awaits several reads for each.
        while True:
            frame = await self._read_frame()
            if frame is None:
                return
            self._last_seen = self._loop.time()
            header, body = frame
            kind = header.packet_type
            if kind == PUBLISH:
                await self._on_publish(header.flags, body, session)
            elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
                if len(body) != 2:
                    raise ProtocolViolation(f"malformed {packet_dict[kind].__name__}: {len(body)} bytes, not 2")
                packet_id = (body[0] << 8) | body[1]
                if kind == PUBACK:
                    session.acknowledged(packet_id, qos=1)
                elif kind == PUBREC:
                    session.received(packet_id)
                elif kind == PUBREL:
                    session.incoming_released(packet_id)
                    self._send_bytes(_ack(PUBCOMP_BYTE, packet_id))
                else:
                    session.acknowledged(packet_id, qos=2)
            elif kind == PINGREQ:
                self._send_bytes(PINGRESP_BYTES)
            elif kind == DISCONNECT:
                self._clean_disconnect = True
                self._reason = "DISCONNECT"
                return
            elif kind == SUBSCRIBE:
                await self._on_subscribe(await _decode(header, body), session)
            elif kind == UNSUBSCRIBE:
                packet = await _decode(header, body)
                for topic_filter in packet.payload.topics:
                    self._hub.unsubscribe(session, topic_filter)
                self._send(UnsubackPacket.build(packet.variable_header.packet_id))
            elif kind == CONNECT:
                raise ProtocolViolation("a second CONNECT on one connection [MQTT-3.1.0-2]")
            else:
                raise ProtocolViolation(f"a client may not send {packet_dict[kind].__name__}")

    async def _on_publish(self, flags: int, body: bytes, session: Session) -> None:
        qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
        end = 2 + ((body[0] << 8) | body[1])  # check_strings has checked the topic's length and UTF-8
        topic = body[2:end].decode()
        packet_id = 0
        if qos:
            if len(body) < end + 2:
                raise ProtocolViolation("malformed PublishPacket: no packet identifier")
            packet_id = (body[end] << 8) | body[end + 1]
            end += 2
        payload = bytes(body[end:])
        if qos not in (0, 1, 2):
            raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
        if not is_valid_topic(topic):
            raise ProtocolViolation(
                f"PUBLISH to {topic!r}: topic names may not be empty or hold wildcards [MQTT-3.3.2-2]"
            )
        repeat = qos == 2 and not session.incoming_started(packet_id)
        if not repeat:
            assert self._principal is not None
            if topic.startswith("$"):
                log.warning(
                    "dropped PUBLISH from client_id=%s to %r: $ topics are the broker's",
                    session.client_id,
                    topic,
                    extra={"topic": topic},
                )
            elif await self._gate.may(self._principal, topic, Action.PUBLISH):
                passed_on = _as_passed_on(topic, payload, session)
                if passed_on is not None:
                    kept = not is_ephemeral(topic)  # typing: to whoever is connected now, at QoS 0, never kept
                    await self._hub.publish(topic, passed_on, qos if kept else 0, retain and kept)
        # Acknowledge only once the message (and, for QoS 2, its packet id) is safely stored.
        if qos == 1:
            self._hub.after_commit(lambda: self._send_bytes(_ack(PUBACK_BYTE, packet_id)))
        elif qos == 2:
            self._hub.after_commit(lambda: self._send_bytes(_ack(PUBREC_BYTE, packet_id)))

    async def _on_subscribe(self, packet: Any, session: Session) -> None:
        assert self._principal is not None
        requests: list[tuple[str, int]] = packet.payload.topics
        if not requests:
            raise ProtocolViolation("SUBSCRIBE without any topic filter [MQTT-3.8.3-3]")
        codes: list[int] = []
        accepted: list[tuple[str, int]] = []
        for topic_filter, qos in requests:
            if qos not in (0, 1, 2):
                raise ProtocolViolation(f"SUBSCRIBE with QoS {qos} [MQTT-3-8.3-4]")
            problem = filter_problem(topic_filter)
            if problem is not None:
                log.warning(
                    "refused subscription of client_id=%s to %r: %s",
                    session.client_id,
                    topic_filter,
                    problem,
                    extra={"topic": topic_filter},
                )
                codes.append(SUBACK_FAILURE)
            elif (
                topic_filter not in session.subscriptions
                and len(session.subscriptions) >= self._limits.max_subscriptions
            ):
                log.warning(
                    "refused subscription of client_id=%s to %r: it has %d, the limit (mqtt.max_subscriptions)",
                    session.client_id,
                    topic_filter,
                    len(session.subscriptions),
                    extra={"topic": topic_filter},
                )
                codes.append(SUBACK_FAILURE)
            elif not await self._gate.may(self._principal, topic_filter, Action.SUBSCRIBE):
                codes.append(SUBACK_FAILURE)
            else:
                self._hub.add_subscription(session, topic_filter, qos)
                codes.append(qos)
                accepted.append((topic_filter, qos))
        self._send(SubackPacket.build(packet.variable_header.packet_id, codes))
        for topic_filter, qos in accepted:
            await self._hub.send_retained(session, topic_filter, qos)

    # Writing (the Outbox a session uses) ----------------------------------------------------------

    def send_publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None:
        if self._closing:
            return
        if (
            message.qos == 0
            and self._transport is not None
            and (self._transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES)
        ):
            self._hub.stats.dropped_qos0 += 1  # a client that does not read: QoS 0 may be lost, memory may not grow
            return
        self._writer.write(
            encode_publish(message.topic, message.payload, message.qos, packet_id, dup=dup, retain=message.retain)
        )
        if self._needs_drain:
            self._dirty.set()

    def send_pubrel(self, packet_id: int) -> None:
        self._send(PubrelPacket.build(packet_id))

    def _send(self, packet: Any) -> None:
        self._send_bytes(packet.to_bytes())

    def _send_bytes(self, data: bytes) -> None:
        if self._closing:
            return
        self._writer.write(data)
        if self._needs_drain:
            self._dirty.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._writer.drain()
            except Exception as exc:  # a dead peer: end the connection
                self.abort(f"write failed: {exc or type(exc).__name__}")
                return


PUBACK_BYTE, PUBREC_BYTE, PUBCOMP_BYTE = 0x40, 0x50, 0x70
PINGRESP_BYTES = b"\xd0\x00"


def _ack(first_byte: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC or PUBCOMP for ``packet_id``."""
    return bytes((first_byte, 2, packet_id >> 8, packet_id & 0xFF))


async def _decode(header: MQTTFixedHeader, body: bytes) -> Any:
    """A packet decoded by amqtt's codec; any failure is the client's malformed packet."""
    packet_class = packet_dict[header.packet_type]
    try:
        return await packet_class.from_stream(BufferReader(body), fixed_header=header)
    except Exception as exc:
        raise ProtocolViolation(f"malformed {packet_class.__name__}: {exc or type(exc).__name__}") from None


def _as_passed_on(topic: str, payload: bytes, session: Session) -> bytes | None:
    """The payload the broker routes: a client's own presence carries the server's time, not the client's
    (a chosen far-future "at" would freeze it online through the bridge's watermark); a presence payload
    that is not ``{"status": "online"|"offline"}`` is dropped with a log line. None: drop."""
    if not topic.startswith("presence/"):
        return payload
    stamped = stamp_presence(payload, datetime.now(UTC))
    if isinstance(stamped, Rejection):
        log.warning(
            "dropped PUBLISH from client_id=%s to %r: %s",
            session.client_id,
            topic,
            stamped.reason,
            extra={"topic": topic},
        )
        return None
    return stamped


def _transport(writer: WriterAdapter) -> Any:
    """The asyncio transport under an amqtt writer adapter (TCP or WebSocket), if there is one."""
    inner = getattr(writer, "_writer", None) or getattr(writer, "_protocol", None)
    return getattr(inner, "transport", None)


def _close(writer: WriterAdapter, *, abort: bool) -> None:
    """Close the underlying transport: ``abort`` drops unsent data (for a dead or replaced peer)."""
    transport = _transport(writer)
    if transport is None:
        return
    if abort:
        transport.abort()
    else:
        transport.close()
