"""bench/httpload.c stays buildable and correct: built with the system C compiler and run by bench/api_storm.py
for one round of the sync storm (about a second) against a real ``switchboard api`` on Postgres, with one and with
two worker processes. Every recorded request is replayed and answered 200 (httpload checks each answer; the
benchmark raises on any other), sync and history pages both. No timing is asserted (benchmarks only).
"""

from __future__ import annotations

import argparse
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import api_storm
from bench.throughput import build_loadgen
from tests.conftest import migrated_database

pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="needs cc")


@pytest.fixture(scope="module")
def storm_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, api_storm.Storm]]:
    """A migrated Postgres database loaded with the storm's users, tokens and messages."""
    with migrated_database("postgres", tmp_path_factory) as url:
        pairs = api_storm.conversation_pairs()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        tokens, head = api_storm.load(dsn, pairs, random.Random(1))
        yield url, api_storm.Storm("", tokens, pairs, head)


@pytest.fixture(scope="module")
def httpload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_loadgen(tmp_path_factory.mktemp("httpload"), api_storm.HTTPLOAD)


@pytest.mark.parametrize("workers", [1, 2])
def test_httpload_replays_the_recorded_storm_and_every_answer_is_200(
    storm_database: tuple[str, api_storm.Storm], httpload: Path, tmp_path: Path, workers: int
) -> None:
    url, storm = storm_database
    args = argparse.Namespace(rounds=1, concurrency=16, workers=workers, py_spy_gil=False)
    figures = api_storm.measure(args, url, tmp_path, api_storm.REPO, storm, None, httpload)
    recorded = sum(len(paths) for paths in storm.played.values())
    assert len(storm.played) == api_storm.USERS, sorted(storm.played)
    assert figures["requests"] == recorded == figures["sync_requests"] + figures["history_requests"], figures
    assert figures["sync_requests"] > api_storm.USERS, figures  # cursors followed: more than one page a phone
    assert figures["history_requests"] > 0 and figures["api_cpu_ms_per_request"] > 0, figures
    assert all(latency > 0 for latency in storm.latencies)
