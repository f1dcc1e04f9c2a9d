"""The bridge's MQTT connection: one ``paho.mqtt.client.Client`` driven from asyncio through paho's public API.

paho's documented external-loop API (``socket()``, ``loop_read()``, ``loop_write()``, ``want_write()``,
``loop_misc()`` and the ``on_socket_*`` callbacks) runs on the event loop: the socket is watched with
``add_reader``/``add_writer``, keep-alive is a one-second ``loop_misc()`` timer. ``manual_ack=True`` is given
to the constructor, so paho never acknowledges a QoS 1 message by itself: :meth:`BrokerConnection.ack` sends
the PUBACK, which the bridge does only after the message's transaction has committed.

One connection per object: the bridge makes a new one (same client id, ``clean_session=False``) to
reconnect, so the broker's session carries what was not acknowledged. Library errors are translated here:
:class:`BrokerUnavailable` (try again later) and :class:`SubscriptionRefused` (the broker said no to a
filter: trying again cannot help, the bridge exits).

Per message the costs are paho's own (an ``MQTTMessage`` with its lock, a few ``recv`` calls); this module
adds none: a readable socket is drained by calling ``loop_read()`` again while it keeps delivering
messages (paho reads only a packet or two per call), instead of one event-loop turn per message; and
the PUBACKs and replies queued for a batch leave in as few TCP segments as the kernel can make of them
(``TCP_CORK`` around ``loop_write()`` on Linux), which also saves the broker a read per PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from switchboard.errors import SwitchboardError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
DISCONNECT_TIMEOUT_SECONDS = 5.0
MISC_INTERVAL_SECONDS = 1.0
#: ``loop_read()`` calls in one wake-up at most, so a flood of messages cannot starve the event loop.
MAX_READS_PER_WAKEUP = 256

Message = mqtt.MQTTMessage


class BrokerUnavailable(SwitchboardError):
    """The broker cannot be reached, refused the login, or went away: the bridge tries again later."""


class SubscriptionRefused(SwitchboardError):
    """The broker refused one of the bridge's subscriptions: the bridge would store nothing for it, and
    trying again cannot help. The message is one line: which filter, which account, what to check."""


class BrokerConnection:
    """One MQTT 3.1.1 connection with a persistent session, delivering each PUBLISH to ``on_message``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        on_message: Callable[[Message], None],
        keepalive: int = 30,
    ) -> None:
        self._host, self._port, self._username, self._keepalive = host, port, username, keepalive
        self._on_message = on_message
        self._delivered = 0
        self._loop = asyncio.get_running_loop()
        self._socket: socket.socket | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self.closed: asyncio.Future[str] = self._loop.create_future()
        """Resolves with a reason when the connection is gone, however it went."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.username_pw_set(username, password)
        # paho's in-flight window for the ack/{sender} replies stays at its default (20): paho walks every
        # unacknowledged reply on each PUBACK (``_update_inflight``), so a window of thousands costs O(n) per
        # PUBACK (measured: 40% of the bridge's CPU with 20,000).
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        client.on_disconnect = self._disconnected
        self._client = client

    async def connect(self) -> None:
        """Open the socket, send CONNECT and wait for the CONNACK; :class:`BrokerUnavailable` if refused."""
        where = f"{self._host}:{self._port}"
        try:
            # paho's connect() resolves the name and connects a blocking socket: off the event loop. The
            # CONNECT packet is written inline there (no socket callbacks are registered yet).
            await asyncio.to_thread(self._client.connect, self._host, self._port, self._keepalive)
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(f"cannot connect to {where}: {exc}") from exc
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            raise BrokerUnavailable(f"connection to {where} closed before CONNACK")
        self._watch(sock)
        try:
            code = await asyncio.wait_for(asyncio.shield(self._connack), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            self.abort()
            raise BrokerUnavailable(f"no CONNACK from {where} within {CONNECT_TIMEOUT_SECONDS:.0f}s") from None
        except BrokerUnavailable:
            self.abort()
            raise
        if code.is_failure:
            self.abort()
            raise BrokerUnavailable(f"{where} refused the login of {self._username!r}: {code}")

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe to every filter in one SUBSCRIBE; :class:`SubscriptionRefused` naming the first refused."""
        rc, mid = self._client.subscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"could not send SUBSCRIBE: {mqtt.error_string(rc)}")
        suback = self._subacks[mid] = self._loop.create_future()
        done, _ = await asyncio.wait(
            (suback, self.closed), timeout=CONNECT_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        if suback not in done:
            reason = self.closed.result() if self.closed.done() else "no SUBACK"
            raise BrokerUnavailable(f"subscribing at {self._host}:{self._port}: {reason}")
        for (topic_filter, _), code in zip(filters, suback.result(), strict=False):
            if code.is_failure:
                raise SubscriptionRefused(
                    f"the broker at {self._host}:{self._port} refused subscription {topic_filter} for account "
                    f"{self._username!r} (SUBACK {code.value:#04x}): log the bridge in as a service account the "
                    "broker lets subscribe to it (bridge.username, `switchboard user add NAME --role service`), "
                    "or give that account the filter in the broker's ACL; with bridge.shared_group the broker "
                    "must also support $share subscriptions"
                )

    def ack(self, message: Message) -> None:
        """PUBACK ``message`` (queued; written with the next batch of writes)."""
        self._client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Queue a PUBLISH; paho retries it on this connection until the broker acknowledges it."""
        self._client.publish(topic, payload, qos=qos)

    async def disconnect(self) -> None:
        """Send what is queued, then DISCONNECT, and wait (up to DISCONNECT_TIMEOUT_SECONDS) for the socket
        to close."""
        if self.closed.done():
            return
        self._client.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), DISCONNECT_TIMEOUT_SECONDS)
        self.abort()

    def abort(self) -> None:
        """Close the socket at once, without DISCONNECT (the broker then sends the will, if any)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            self._unwatch(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._close("closed by the bridge")

    # -- the event loop's side of paho's external-loop API --------------------------------------------------

    def _watch(self, sock: socket.socket) -> None:
        self._socket = sock
        self._client.on_socket_close = lambda _client, _userdata, closed: self._socket_closed(closed)
        self._client.on_socket_register_write = lambda _c, _u, s: self._loop.add_writer(s, self._write)
        self._client.on_socket_unregister_write = self._writes_done
        self._loop.add_reader(sock, self._read)
        if self._client.want_write():
            self._loop.add_writer(sock, self._write)
        self._misc = self._loop.call_later(MISC_INTERVAL_SECONDS, self._tick)

    def _writes_done(self, _client: mqtt.Client, _userdata: object, sock: object) -> None:
        self._loop.remove_writer(sock)  # type: ignore[arg-type]

    def _unwatch(self, sock: socket.socket) -> None:
        if self._misc is not None:
            self._misc.cancel()
        with contextlib.suppress(ValueError, OSError):  # already closed
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _read(self) -> None:
        for _ in range(MAX_READS_PER_WAKEUP):
            delivered = self._delivered
            rc = self._client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(rc)
                return
            if self._delivered == delivered:
                return  # nothing more was waiting (or a non-PUBLISH packet: the next wake-up reads on)

    def _write(self) -> None:
        sock = self._socket
        cork = sock is not None and hasattr(socket, "TCP_CORK")
        if cork:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # type: ignore[union-attr]
        rc = self._client.loop_write()
        if cork and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(rc)

    def _tick(self) -> None:
        rc = self._client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(rc)
            return
        self._misc = self._loop.call_later(MISC_INTERVAL_SECONDS, self._tick)

    def _lost(self, rc: MQTTErrorCode) -> None:
        self._close(f"connection lost ({mqtt.error_string(rc)})")
        self.abort()

    def _socket_closed(self, closed: object) -> None:
        if self._socket is not None and closed is self._socket:
            self._unwatch(self._socket)
            self._socket = None
        self._close("the connection closed")

    def _close(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        if not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(f"{self._host}:{self._port}: {reason} before CONNACK"))
            self._connack.exception()  # retrieved: nobody may be waiting any more

    # -- paho's callbacks (called from loop_read/loop_write on the event loop) --------------------------------

    def _connected(
        self, _client: mqtt.Client, _userdata: object, _flags: object, code: ReasonCode, _props: object
    ) -> None:
        if not self._connack.done():
            self._connack.set_result(code)

    def _subscribed(
        self, _client: mqtt.Client, _userdata: object, mid: int, codes: list[ReasonCode], _props: object
    ) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)

    def _message(self, _client: mqtt.Client, _userdata: object, message: Message) -> None:
        self._delivered += 1
        self._on_message(message)

    def _disconnected(
        self, _client: mqtt.Client, _userdata: object, _flags: object, code: ReasonCode, _props: object
    ) -> None:
        self._close(f"disconnected ({code})")
