"""Why a connection ended (:class:`Close`): it decides the will, the log level and the presence announcement.

Its own module so that the packet handlers, the outbox and the MQTT 5 hooks can name a reason without importing
``broker.connection`` (which imports them).
"""

from __future__ import annotations

from enum import Enum


class Close(Enum):
    """Why a connection ended; decides the will, the log level and the presence announcement."""

    OPEN = "open"
    LOST = "connection closed by the client"
    DISCONNECT = "DISCONNECT"
    DISCONNECT_WITH_WILL = "DISCONNECT with will (MQTT 5 reason 0x04)"
    VIOLATION = "protocol violation"
    SILENT = "keep-alive expired"
    ERROR = "internal error"
    TAKEN_OVER = "taken over by a new connection with the same client id"
    SHUTDOWN = "broker shutting down"
    REVOKED = "revoked"
    REFUSED = "refused at mqtt.max_connections"

    @property
    def publishes_will(self) -> bool:
        return self in (Close.LOST, Close.VIOLATION, Close.SILENT, Close.ERROR, Close.DISCONNECT_WITH_WILL)
