"""api/main.py's ApiServer: what start-up leaves behind for the requests that follow."""

from __future__ import annotations

import asyncio
import gc

import httpx
import psycopg
import pytest
from sqlalchemy import make_url

from api.main import ApiServer
from switchboard.db import make_engine
from switchboard.settings import ApiSettings
from tests.conftest import ADMIN_DSN, Users, migrated_database


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


def test_reads_whose_pooled_connections_the_database_closed_are_answered(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The fast reads' pool sends no ping before each checkout (a round trip per read, issue 18), so a connection
    Postgres closed (a restart, a terminated backend) is found dead by the read itself: it is read once more on
    a new connection, and the caller gets its page, not 503. History and sync, through the routes (HTTP Basic)
    and the fast lane (a bearer token)."""
    with migrated_database("postgres", tmp_path_factory) as url:
        engine = make_engine(url)
        users = Users(engine)
        alice, bob = users.user("alice"), users.user("bob")
        history = "/v1/conversations/dm:" + ":".join(sorted((alice[0], bob[0]))) + "/messages"

        async def storm(http: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
            asks = [http.get(history, headers=headers) for _ in range(12)]
            asks += [http.get("/v1/sync", params={"since": "v1.0.0.0"}, headers=headers) for _ in range(12)]
            return [answer.status_code for answer in await asyncio.gather(*asks)]

        async def read_across_terminations() -> list[list[int]]:
            server = ApiServer(ApiSettings(host="127.0.0.1", port=0, metrics_port=None), engine)
            await server.start()
            basic = httpx.BasicAuth(*alice)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as http:
                    issued = await http.post("/v1/auth/token", json={"username": alice[0], "password": alice[1]})
                    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
                    answers = []
                    for headers in ({}, bearer):
                        http.auth = basic if not headers else None
                        await storm(http, headers)  # the read pool's connections are open
                        assert _terminate_backends(url) > 0
                        answers.append(await storm(http, headers))
                    return answers
            finally:
                await server.stop()

        try:
            answers = asyncio.run(read_across_terminations())
        finally:
            gc.unfreeze()
            engine.dispose()
    assert answers == [[200] * 24, [200] * 24]


def _terminate_backends(url: str) -> int:
    """Ends every connection to ``url``'s database, as a restart of Postgres would; returns how many."""
    name = make_url(url).database
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(ended[0]) if ended else 0
