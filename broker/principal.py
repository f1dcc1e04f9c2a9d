"""Who a connection is, as authentication and topic checks (``broker.access``) see it.

Set from the CONNECT by ``broker.handle_connect``; a session restored from the state file carries one
with only the username.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    #: Receive and publish decisions already made for this client, by topic (``AccessControl.check_kept``); None
    #: until the first, so an idle connection holds no dictionary.
    decisions: dict[str, Any] | None = None
    publish_decisions: dict[str, Any] | None = None
