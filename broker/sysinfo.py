"""``$SYS`` statistics: retained messages under ``$SYS/broker/`` refreshed every ``mqtt.sys_interval``
seconds, readable by admin users only (the ACL refuses everyone else; ``#`` never matches ``$`` topics
[MQTT-4.7.2-1]). amqtt's own $SYS plugin published to any client, so it is not loaded.
"""

from __future__ import annotations

import asyncio
import time

from broker.hub import Hub
from switchboard import __version__


def snapshot(hub: Hub, started: float) -> dict[str, int | str]:
    """The figures published, by topic under ``$SYS/broker/``."""
    stats = hub.stats
    return {
        "version": f"switchboard {__version__}",
        "uptime": int(time.monotonic() - started),
        "clients/connected": stats.connections,
        "clients/sessions": len(hub.sessions),
        "subscriptions/count": hub.subscription_count(),
        "retained/count": len(hub.retained),
        "messages/received": sum(stats.messages_in),
        "messages/sent": sum(stats.messages_out),
        "messages/queued": sum(len(s.queue or ()) + len(s.inflight) for s in hub.sessions.values()),
        "messages/dropped": sum(s.dropped for s in hub.sessions.values()),
        "messages/dropped/slow_consumer": stats.dropped_qos0,
        "clients/refused": stats.refused_connections,
        "clients/auth_failures": stats.auth_failures,
    }


async def publish_forever(hub: Hub, interval: float) -> None:
    """Refresh the $SYS topics until cancelled."""
    started = time.monotonic()
    while True:
        for name, value in snapshot(hub, started).items():
            await hub.publish(f"$SYS/broker/{name}", str(value).encode(), 0, True, internal=True)
        await asyncio.sleep(interval)
