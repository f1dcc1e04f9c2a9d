"""The broker's offline announcement held for a will delay, so that presence does not flap on a network blip.

The broker announces ``presence/{user}`` itself (``broker.hub``): online when a user's first connection is
accepted, offline when its last one goes. That announcement is the user's will, and honours the Will Delay
Interval as a will does [MQTT 5.0 §3.1.3.2.2]: when the last connection goes away in a way that publishes its will
(no DISCONNECT 0x00: a lost network, a keep-alive timeout, DISCONNECT 0x04) and that will is held
(``broker.will_delay.left``: min(Will Delay Interval, Session Expiry Interval)), "offline" waits as long. A
connection of the user accepted before then cancels it, and is not announced "online" again: subscribers see
neither change [MQTT-3.1.3-9]. A normal DISCONNECT, an administrator's revocation and a shutdown announce offline
at once; after a restart every user starts offline (``Hub._reset_presence``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Announce = Callable[[str, str], Coroutine[Any, Any, None]]


class PresenceDelay:
    """Users whose "offline" waits for the will delay of their last connection."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    async def offline(self, user: str, delay: float, announce: Announce) -> None:
        """The user's last connection went: announce "offline" now, or after ``delay`` seconds unless it is back."""
        self.back(user)
        if delay <= 0:
            await announce(user, "offline")
            return
        self._waiting[user] = asyncio.get_running_loop().call_later(delay, self._due, user, announce)

    def back(self, user: str) -> bool:
        """A connection of the user was accepted: True when its "offline" was still waiting (now cancelled), so
        subscribers never saw it go and it is not announced "online" again."""
        handle = self._waiting.pop(user, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def _due(self, user: str, announce: Announce) -> None:
        self._waiting.pop(user, None)
        task = asyncio.get_running_loop().create_task(announce(user, "offline"))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
