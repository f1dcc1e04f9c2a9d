"""Back-pressure (broker/connection.py, broker/transport.py): a subscriber that stops reading harms nobody.

While its transport is paused (its client does not read), the broker drops its QoS 0 messages (counted
as ``slow_consumer``), keeps its QoS 1 in its session (bounded by the in-flight window and the queue),
and stops reading from the clients publishing to it until it drains, goes away, or has held them up for
``HOLD_SECONDS`` (then it counts as stuck and its publishers are read again). Other clients keep getting
their messages and the broker's memory stays bounded. Before the broker had a transport of its
own, it kept reading the publisher (and discarding what it could not send), so the publisher was never
held back.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import Stack, wait_for
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
    flooder.sock.settimeout(None)
    total, progress = 20_000, {"sent": 0}

    def flood() -> None:  # 38 MB to the subscriber that does not read, QoS 0 with every tenth at QoS 1
        for n in range(total):
            flooder.sock.sendall(_publish_bytes(f"bp/{tag}/slow", 1 if n % 10 == 0 else 0, n % 60000 + 1))
            progress["sent"] = n + 1

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()

    def stalled() -> bool | None:
        """True once the flooder's sendall has made no progress for 2 s: the broker stopped reading it."""
        seen, since = progress["sent"], time.monotonic()
        while time.monotonic() - since < 2:
            time.sleep(0.1)
            if progress["sent"] != seen or not thread.is_alive():
                return None
        return True

    assert wait_for(stalled, timeout=120, what="the broker to stop reading the flooder (the publisher held up)")

    # Another client is served as usual meanwhile.
    other = raw(open_stack.mqtt_port)
    assert other.connect(f"other-{tag}").body[1] == 0
    for n in range(20):
        other.publish(f"bp/{tag}/ok", f"m{n}".encode(), qos=1)
        other.expect(PUBACK)
        assert [p.payload for p in healthy.publishes(1, ack=True, timeout=20)] == [f"m{n}".encode()]

    # The flooder is held up for a moment only: with the subscriber still connected and still not reading,
    # the rest of the flood is read (and its QoS 0 dropped), and the flooder's other messages flow.
    thread.join(120)
    assert progress["sent"] == total, f"the flooder is still held up after {progress['sent']} messages"
    flooder.sock.sendall(_publish_bytes(f"bp/{tag}/ok", 0, 1))
    assert [p.payload for p in healthy.publishes(1, timeout=60)] == [PAYLOAD]

    assert _dropped_slow(open_stack) > dropped_before
    grown = _rss_bytes(open_stack) - rss_before
    assert grown < 64 * 1024 * 1024, f"the broker grew by {grown // 2**20} MiB"
    slow.drop()
