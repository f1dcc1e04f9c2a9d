"""api/main.py's ApiServer: what start-up leaves behind for the requests that follow."""

from __future__ import annotations

import asyncio
import gc

import httpx

from api.main import ApiServer
from switchboard.db import make_engine
from switchboard.settings import ApiSettings


def test_start_freezes_the_start_up_heap_so_full_collections_skip_it(sqlite_url: str) -> None:
    """After start, the objects start-up built are in the collector's permanent generation (``gc.freeze``): a
    full collection during a storm then scans the requests' objects only (issue 18: 230-290 ms pauses before)."""
    gc.unfreeze()
    engine = make_engine(sqlite_url)

    async def start_and_ask() -> tuple[int, int]:
        server = ApiServer(ApiSettings(host="127.0.0.1", port=0, metrics_port=None), engine)
        await server.start()
        try:
            frozen = gc.get_freeze_count()
            async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
                status = (await http.get(f"http://127.0.0.1:{server.port}/healthz")).status_code
        finally:
            await server.stop()
        return frozen, status

    try:
        frozen, status = asyncio.run(start_and_ask())
    finally:
        gc.unfreeze()
        engine.dispose()
    assert status == 200
    assert frozen > 10_000, frozen  # the app, its routes and models, SQLAlchemy's and FastAPI's modules
