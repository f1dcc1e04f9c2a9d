"""A broker that stops tells its MQTT 5 clients why: DISCONNECT 0x8B "server shutting down" (MQTT 5.0
§3.14.2.1), over TCP and WebSocket. A stack of its own (``switchboard up`` as a subprocess, stopped by the
test), paho-mqtt 2.x clients with ``protocol=MQTTv5``."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import OPEN_LIMITS
from tests.helpers import start_stack
from tests.mqtt5 import TRANSPORTS, V5Client, port_of

SERVER_SHUTTING_DOWN = 0x8B


@TRANSPORTS
def test_graceful_stop_sends_disconnect_0x8B_server_shutting_down_MQTT_3_14_2(
    tmp_path: Path, clients: Callable[..., V5Client], websocket: bool
) -> None:
    stack = start_stack(f"sqlite:///{tmp_path}/state.db", tmp_path, **OPEN_LIMITS)
    try:
        client = clients(port_of(stack, websocket), f"stay-{secrets.token_hex(3)}", websocket=websocket)
        assert client.connect()[1].value == 0
        client.client.reconnect_delay_set(60, 120)  # stay away once the broker is gone
    finally:
        assert stack.stop(signal.SIGTERM) == 0, stack.output()
    reason, _properties = client.disconnects.get(timeout=20)
    assert reason.value == SERVER_SHUTTING_DOWN
