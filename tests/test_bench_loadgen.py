"""bench/loadgen.c stays buildable and correct (MQTT 3.1.1 and MQTT 5): built with the system C compiler and run
for about a second by bench/throughput.py against real Mosquitto and Switchboard brokers at U = 10, every run
delivers messages, loses none, and the broker's CPU per message is measured. No timing is asserted (benchmarks only).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

import pytest

from bench import throughput

pytestmark = pytest.mark.skipif(
    not (shutil.which("cc") and shutil.which("mosquitto") and shutil.which("mosquitto_passwd")),
    reason="needs cc, mosquitto and mosquitto_passwd",
)


def options() -> argparse.Namespace:
    return argparse.Namespace(
        window=20, pending=10, warmup=0.5, duration=1.0, shards=1, connect_timeout=60.0, amqtt_max_users=0, profile=None
    )


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return throughput.build_loadgen(tmp_path_factory.mktemp("loadgen"))


@pytest.mark.parametrize("workload", ["dm", "chat"])
@pytest.mark.parametrize("broker", ["mosquitto", "switchboard"])
def test_loadgen_delivers_through_each_broker(loadgen: Path, tmp_path: Path, broker: str, workload: str) -> None:
    row = asyncio.run(throughput.load_run(options(), loadgen, tmp_path, workload, broker, 10))
    assert row.rate > 0, row
    assert row.extra == {"lost": 0, "duplicates": 0, "disconnects": 0}, row
    assert row.broker_us_per_msg > 0 and row.connect_s > 0, row


def test_loadgen_idle_connects_and_survives_a_reconnect_storm(loadgen: Path, tmp_path: Path) -> None:
    row = asyncio.run(throughput.idle_run(options(), loadgen, tmp_path, "mosquitto", 10))
    assert row.connect_s > 0 and row.storm_s > 0 and row.rss_mb > 0, row


@pytest.mark.parametrize("broker", ["mosquitto", "switchboard"])
def test_loadgen_speaks_mqtt5_for_the_chat_benchmarks_v5_column(loadgen: Path, tmp_path: Path, broker: str) -> None:
    """``--protocols 5``: the generator connects, subscribes, publishes and acknowledges as an MQTT 5 client (protocol
    level 5, property lists) and every message arrives once; the row is the broker's "v5" column."""
    row = asyncio.run(throughput.load_run(options(), loadgen, tmp_path, "chat", broker, 10, 5))
    assert row.broker == f"{broker} v5" and row.rate > 0, row
    assert row.extra == {"lost": 0, "duplicates": 0, "disconnects": 0}, row
