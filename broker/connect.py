"""Override: authenticate a CONNECT before it can touch any session, and bind client ids to users.

amqtt 0.12.1 handles a CONNECT in this order: with clean_session=1 it deletes the stored session
of that client id, then takes over (disconnects) a connected client with the same id, and only
then asks the auth plugins. So a client with a wrong password, or none, could wipe another
client's persistent session (its subscriptions and queued messages) or kick it off, just by
naming its client id. Here the credentials are checked first, and a client id that belongs to
another user's session is refused with CONNACK 0x02 (identifier rejected, MQTT 3.1.1 §3.2.2.3).

Everything after the check is amqtt's own logic, unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import format_client_message, gen_client_id

log = logging.getLogger(__name__)


#: What a resumed session takes from the new CONNECT. amqtt forgets will_retain; here the will applies whole.
_RESUMED_FIELDS = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "will_retain",
    "keep_alive",
    "username",
    "password",
)


class AuthenticateBeforeSession(Broker):
    """Broker whose CONNECT handling authenticates before any session is deleted or taken over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._authenticated: set[str] = set()

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        peer = format_client_message(address=remote_address, port=remote_port)
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError as exc:
            log.warning("invalid CONNECT from %s: %s", peer, exc)
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            # [MQTT-3.1.0-1]: the first packet must be a CONNECT.
            log.warning("could not read a CONNECT from %s: %s", peer, exc)
            await writer.close()
            raise AMQTTError(str(exc)) from exc

        if not await super()._authenticate(session, self.listeners_config["default"]):
            await self._refuse(writer, NOT_AUTHORIZED)
            raise AMQTTError(f"{peer}: not authorized (client_id={session.client_id!r})")

        stored = self._sessions.get(session.client_id) if session.client_id else None
        if stored is not None and stored[0].username != session.username:
            log.warning(
                "refused client_id=%s user=%s from %s: the client id belongs to another user's session",
                session.client_id,
                session.username,
                peer,
            )
            await self._refuse(writer, IDENTIFIER_REJECTED)
            raise AMQTTError(f"{peer}: client id {session.client_id!r} belongs to another user")

        session = await self._attach_session(session)
        self._authenticated.add(session.client_id)
        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            session.keep_alive += timeout_disconnect_delay
        return handler, session

    async def _attach_session(self, session: Session) -> Session:
        """amqtt's own choice between a fresh session and the stored one (unchanged)."""
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
            return session
        stored = self._sessions.get(session.client_id)
        if stored is None:
            session.parent = 0
            return session
        existing = stored[0]
        fields = (
            "will_flag",
            "will_message",
            "will_topic",
            "will_qos",
            "will_retain",
            "keep_alive",
            "username",
            "password",
        )
        for name in fields:
            setattr(existing, name, getattr(session, name))
        existing.parent = 1
        return existing

    @staticmethod
    async def _refuse(writer: WriterAdapter, return_code: int) -> None:
        try:
            await ConnackPacket.build(0, return_code).to_stream(writer)
        finally:
            await writer.close()

    async def _authenticate(self, session: Session, listener: ListenerConfig) -> bool:
        """Already decided in :meth:`_initialize_client_session`; amqtt asks again, so answer from memory."""
        if session.client_id in self._authenticated:
            self._authenticated.discard(session.client_id)
            return True
        return False
