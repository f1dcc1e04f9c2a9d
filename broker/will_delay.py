"""MQTT 5 wills [MQTT 5.0 §3.1.2.5, §3.1.3.2]: the Will Delay Interval, the will's own Message Expiry Interval, and a
delayed will kept in the state file across a broker restart.

- The will of a client that went away waits min(Will Delay Interval, Session Expiry Interval) [MQTT 5.0 §3.1.3.2.2].
  A new connection to its session before then publishes none [MQTT-3.1.3-9], a 3.1.1 client's too; a new
  connection with Clean Start ends the session, so the will goes at once [MQTT-3.1.2-8] (as MQTT 5.0 §3.1.4's
  comment on takeover says; Mosquitto 2.0.11 keeps waiting).
- The will's Message Expiry Interval is its lifetime from when it is published, and is sent with the time left
  [MQTT 5.0 §3.1.3.2.4].
- A will on the user's own ``presence/{user}`` is never published: the broker announces presence itself, and holds
  its offline announcement as long as the will (``broker.presence_delay``): a client back in time makes presence
  neither go offline nor come online again.
- A delayed will of a persistent session is written to the state file when its delay starts, with the wall-clock
  time it is due, and removed when it is published or cancelled. After a restart (graceful or ``kill -9``) it is
  published when due, at once if that time passed while the broker was down: the broker being down is neither the
  client coming back [MQTT-3.1.3-9] nor a DISCONNECT 0x00, the two things that cancel a will [MQTT-3.1.2-8], and a
  will never waits past its session's end, which counts while the broker is down too.
- The will of every connected client (3.1.1 or 5, clean or not) is in the state file too, as connected, with the
  delay it would wait (``kept``), and leaves it when the connection ends (``hold``). After a ``kill -9`` the crash
  closed that connection without DISCONNECT, so the will is published [MQTT-3.1.2-8]: at once, or after its delay
  counted from start-up when its session waits for it (the broker does not know when it died), unless the client
  is back first [MQTT-3.1.3-9]. A graceful stop publishes none and leaves none.
- A client taken over by a new connection with its client id [MQTT 5.0 §3.1.4]: an MQTT 5 client's will goes as
  the rules above say (the new connection cancels it within the delay, or publishes it as Clean Start ends the
  session); a 3.1.1 client's is published at once [MQTT-3.1.2-8] (``broker.handle_connect``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from broker.sessions import V5Properties
from broker.v5 import session_state
from switchboard.topics import presence_topic

if TYPE_CHECKING:
    from broker.hub import Hub
    from broker.sessions import Session, Will
    from broker.v5 import V5State

_RUNNING: set[asyncio.Task[Any]] = set()


def message_properties(will: Will) -> V5Properties | None:
    """What ``will`` is published with now: its properties, and its Message Expiry Interval counted from now."""
    if not will.expiry:
        return will.properties
    fields = will.properties.fields if will.properties is not None else b""
    return V5Properties(fields, time.monotonic() + will.expiry)


def kept(hub: Hub, session: Session, will: Will | None, state: V5State | None) -> None:
    """A connection with a will was accepted: its will is kept in the state file as connected, so that a broker
    killed meanwhile publishes it after its restart (``broker.persistence``); never one on the user's own presence
    topic (never published)."""
    store = hub.store
    if store is not None and will is not None and not _own_presence(session.username, will):
        store.will_connected(session.client_id, will, _delay(state))


def _delay(state: V5State | None) -> int:
    """How long a will waits once its connection closes: min(Will Delay Interval, Session Expiry Interval); a
    3.1.1 will (``state`` None) does not wait."""
    return min(state.will_delay, state.session_expiry) if state is not None else 0


def hold(hub: Hub, session: Session, will: Will | None, state: V5State | None) -> Will | None:
    """The connection ended: hold the will of a client that went away for its Will Delay Interval (at most the
    session's life); the will to publish now: none held, or no delay (or the session ends now), or none at all
    (its row as connected leaves the state file)."""
    delay = _delay(state)
    store = hub.store
    if will is None or delay <= 0:
        if store is not None and session.client_id in store.live_wills:
            store.will_gone(session.client_id)
        return will
    _arm(hub, session, will, delay)
    if store is not None:
        if session.journal is not None:
            store.will_held(session.client_id, will, time.time() + delay)
        elif session.client_id in store.live_wills:
            store.will_gone(session.client_id)
    return None


def restart_wills(hub: Hub, wills: list[tuple[str | None, Will]]) -> None:
    """The wills of clients connected when the broker died, due at once (``broker.persistence``): each published."""
    for username, will in wills:
        publish(hub, username, will)


def restored(hub: Hub, session: Session, will: Will, due: float) -> None:
    """A delayed will read back from the state file: published at ``due`` (wall clock), at once if it passed."""
    _arm(hub, session, will, max(due - time.time(), 0.0))


def _arm(hub: Hub, session: Session, will: Will, delay: float) -> None:
    timers = session_state(session)
    timers.pending_will = will
    timers.will = asyncio.get_running_loop().call_later(delay, publish_held, hub, session)


def left(session: Session) -> float:
    """Seconds until the session's delayed will is due (0: none held): how long presence stays online."""
    timers = session.v5
    if timers is None or timers.will is None:
        return 0.0
    return max(timers.will.when() - asyncio.get_running_loop().time(), 0.0)


def publish_held(hub: Hub, session: Session) -> None:
    """The delay is over (or the session ends): publish the held will, unless its client is back or the session was
    dropped meanwhile (its user deleted)."""
    timers = session.v5
    if timers is None or timers.pending_will is None:
        return
    will = timers.pending_will
    cancel(hub, session)
    if not session.connected and hub.sessions.get(session.client_id) is session:
        publish(hub, session.username, will)


def reconnected(hub: Hub, session: Session, *, ends: bool) -> None:
    """A new connection for the session's client id: its delayed will is cancelled [MQTT-3.1.3-9], or, when the
    new connection ends the session (Clean Start), published now [MQTT-3.1.2-8]."""
    timers = session.v5
    if timers is None or timers.pending_will is None:
        return
    will = timers.pending_will
    cancel(hub, session)
    if ends:
        publish(hub, session.username, will)


def cancel(hub: Hub, session: Session) -> None:
    """Forget the session's delayed will, in the state file too."""
    timers = session.v5
    if timers is None or timers.pending_will is None:
        return
    if timers.will is not None:
        timers.will.cancel()
    timers.will = timers.pending_will = None
    if session.journal is not None and hub.store is not None:
        hub.store.will_gone(session.client_id)


def publish(hub: Hub, username: str | None, will: Will) -> None:
    """Publish ``will`` (in a task of its own); never one on its user's own presence topic: the broker announces
    presence itself."""
    if _own_presence(username, will):
        return
    work = hub.publish(will.topic, will.payload, will.qos, will.retain, properties=message_properties(will))
    task = asyncio.get_running_loop().create_task(work)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


def _own_presence(username: str | None, will: Will) -> bool:
    return username is not None and will.topic == presence_topic(username)
