"""Who a connection is, as authentication and topic checks see it.

amqtt's plugin API passes an ``amqtt.session.Session``, which builds a ``transitions`` state machine per
instance (thousands of bytes and dozens of objects per connection). Switchboard's own plugin and access
checks read only these fields, so each connection carries this instead (tested by
tests/test_broker_connect.py and the memory figures of bench/chat.py --idle).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Principal:
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    clean_session: bool = True
    keep_alive: int = 0
    will_flag: bool = False
    will_topic: str | None = None
    #: The client's IP address (the login throttle's key, with the username).
    address: str | None = None
