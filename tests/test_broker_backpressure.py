"""Back-pressure (broker/connection.py, broker/transport.py): a subscriber that stops reading harms nobody.

While its transport is paused (its client does not read), the broker drops its QoS 0 messages (counted
as ``slow_consumer``), keeps its QoS 1 in its session (bounded by the in-flight window and the queue),
and stops reading from the clients publishing to it until it drains or goes away. Other clients keep
getting their messages and the broker's memory stays bounded. Before the broker had a transport of its
own, it kept reading the publisher (and discarding what it could not send), so the publisher was never
held back.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import Stack
from tests.rawmqtt import PUBACK, RawClient, packet

Raw = Callable[[int], RawClient]
PUBLISH = 3
PAYLOAD = b"x" * 1900  # under open_stack's max_packet_bytes (2048)


def _dropped_slow(stack: Stack) -> float:
    port = int(stack.out.wait_for(r"broker metrics on http://[\d.]+:(\d+)/metrics", 10).group(1))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False, timeout=10).text
    found = re.search(r'^switchboard_broker_messages_dropped_total\{reason="slow_consumer"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _rss_bytes(stack: Stack) -> int:
    status = Path(f"/proc/{stack.process.pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert found
    return int(found.group(1)) * 1024


def _publish_bytes(topic: str, qos: int, packet_id: int) -> bytes:
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + (packet_id.to_bytes(2, "big") if qos else b"") + PAYLOAD
    return packet(PUBLISH, qos << 1, body)


def test_a_subscriber_that_never_reads_pauses_its_publishers_and_harms_no_one(open_stack: Stack, raw: Raw) -> None:
    tag = secrets.token_hex(3)
    slow = raw(open_stack.mqtt_port)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.connect(f"slow-{tag}").body[1] == 0
    assert slow.subscribe((f"bp/{tag}/slow", 1)) == [1]
    healthy = raw(open_stack.mqtt_port)
    assert healthy.connect(f"healthy-{tag}").body[1] == 0
    assert healthy.subscribe((f"bp/{tag}/ok", 1)) == [1]
    dropped_before, rss_before = _dropped_slow(open_stack), _rss_bytes(open_stack)

    flooder = raw(open_stack.mqtt_port)
    assert flooder.connect(f"flooder-{tag}").body[1] == 0
    flooder.sock.settimeout(5)  # sendall blocks once the broker stops reading the flooder
    state = {"sent": 0, "blocked": False}

    def flood() -> None:
        try:
            for n in range(50_000):  # 95 MB, QoS 0 with every tenth at QoS 1
                qos = 1 if n % 10 == 0 else 0
                flooder.sock.sendall(_publish_bytes(f"bp/{tag}/slow", qos, n % 60000 + 1))
                state["sent"] = n + 1
        except TimeoutError:
            state["blocked"] = True

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    thread.join(120)
    assert state["blocked"], f"the broker kept reading the flooder ({state['sent']} messages, nobody to take them)"

    # Another client is served as usual meanwhile.
    other = raw(open_stack.mqtt_port)
    assert other.connect(f"other-{tag}").body[1] == 0
    for n in range(20):
        other.publish(f"bp/{tag}/ok", f"m{n}".encode(), qos=1)
        other.expect(PUBACK)
        assert [p.payload for p in healthy.publishes(1, ack=True, timeout=20)] == [f"m{n}".encode()]

    assert _dropped_slow(open_stack) > dropped_before
    grown = _rss_bytes(open_stack) - rss_before
    assert grown < 64 * 1024 * 1024, f"the broker grew by {grown // 2**20} MiB"

    # The slow subscriber goes away: the flooder is read again.
    slow.drop()
    flooder.sock.settimeout(30)
    flooder.sock.sendall(_publish_bytes(f"bp/{tag}/ok", 0, 1))
    assert [p.payload for p in healthy.publishes(1, timeout=60)] == [PAYLOAD]
