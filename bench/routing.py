"""Routing benchmark: does delivering one message cost more when more clients are subscribed?

N clients each subscribe to their own inbox (``inbox/{i}``, QoS 0); one publisher sends M messages to
random inboxes as fast as it can; we time until every message has arrived. The same run measures
Switchboard's broker, Mosquitto and plain amqtt 0.12.1, so the figures are ratios from one machine at
one moment (absolute numbers on these shared machines are noise).

    uv run python bench/routing.py                       # N = 10, 1000, 10000; all three brokers
    uv run python bench/routing.py --subscribers 10 1000 --brokers switchboard mosquitto

Run by hand; results go in docs/performance.md. Needs mosquitto (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brokers import BROKERS, RunningBroker
from mqttwire import connect_packet, publish_packet, subscribe_packet

PAYLOAD = b'{"id":"bench","body":"' + b"x" * 70 + b'"}'  # about 100 bytes, like a chat message


class Inbox(asyncio.Protocol):
    """One subscriber: counts PUBLISH packets by size (they all have the same length)."""

    def __init__(self, index: int, ready: asyncio.Event) -> None:
        self.topic = f"inbox/{index}"
        self.packet_len = len(publish_packet(self.topic, PAYLOAD))
        self.ready = ready
        self.buffer = 0
        self.handshake = b""
        self.received = 0
        self.subscribed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        assert isinstance(transport, asyncio.Transport)
        transport.write(connect_packet(f"bench-{self.topic}") + subscribe_packet(self.topic, 0, packet_id=1))

    def data_received(self, data: bytes) -> None:
        if not self.subscribed:
            self.handshake += data
            if len(self.handshake) >= 4 + 5:  # CONNACK (4 bytes) + SUBACK (5 bytes)
                self.subscribed = True
                self.ready.set()
                data = self.handshake[9:]
            else:
                return
        self.buffer += len(data)
        self.received, self.buffer = self.received + self.buffer // self.packet_len, self.buffer % self.packet_len


async def measure(broker: RunningBroker, subscribers: int, messages: int, time_limit: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    inboxes: list[Inbox] = []
    started = time.monotonic()
    for batch_start in range(0, subscribers, 250):
        events = []
        for index in range(batch_start, min(subscribers, batch_start + 250)):
            ready = asyncio.Event()
            _, inbox = await loop.create_connection(lambda i=index, r=ready: Inbox(i, r), "127.0.0.1", broker.port)
            inboxes.append(inbox)
            events.append(ready.wait())
        await asyncio.wait_for(asyncio.gather(*events), 120)
    connect_seconds = time.monotonic() - started

    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(connect_packet("bench-publisher"))
    await reader.readexactly(4)
    rng = random.Random(1)
    packets = [publish_packet(f"inbox/{rng.randrange(subscribers)}", PAYLOAD) for _ in range(messages)]
    began = time.monotonic()
    for chunk in range(0, messages, 500):
        writer.write(b"".join(packets[chunk : chunk + 500]))
        await writer.drain()
    while sum(i.received for i in inboxes) < messages and time.monotonic() - began < time_limit:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # polling the counters is cheaper than an event per message
    elapsed = time.monotonic() - began
    delivered = sum(i.received for i in inboxes)
    writer.close()
    for inbox in inboxes:
        inbox.transport.close()
    await asyncio.sleep(0.5)
    return {"delivered": delivered, "seconds": elapsed, "rate": delivered / elapsed, "connect_s": connect_seconds}


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=list(BROKERS))
    parser.add_argument("--time-limit", type=float, default=60.0, help="stop waiting for deliveries after this")
    args = parser.parse_args()
    raise_file_limit()
    results: dict[tuple[str, int], dict[str, float]] = {}
    for subscribers in args.subscribers:
        for name in args.brokers:
            async with BROKERS[name](anonymous=True) as broker:
                result = await measure(broker, subscribers, args.messages, args.time_limit)
            results[(name, subscribers)] = result
            print(
                f"{name:12} N={subscribers:6}  {result['rate']:9.0f} msg/s  "
                f"({result['delivered']:.0f}/{args.messages} in {result['seconds']:.1f}s; "
                f"{subscribers} connected in {result['connect_s']:.1f}s)",
                flush=True,
            )
    print("\n| subscribers | " + " | ".join(f"{b} msg/s" for b in args.brokers) + " | Switchboard / N=first |")
    print("|---" * (len(args.brokers) + 2) + "|")
    first = args.subscribers[0]
    for subscribers in args.subscribers:
        row = [f"{results[(b, subscribers)]['rate']:.0f}" for b in args.brokers]
        base = results.get(("switchboard", first))
        ratio = (
            results[("switchboard", subscribers)]["rate"] / base["rate"]
            if base and "switchboard" in args.brokers
            else 0
        )
        print(f"| {subscribers} | " + " | ".join(row) + f" | {ratio:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
