"""A throwaway Postgres database for one benchmark run, on the cluster at ``BENCH_PG_ADMIN_DSN`` (default:
the local cluster's socket, as the current user, as scripts/test sets it up)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection
from sqlalchemy.sql import Executable

ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "host=/var/run/postgresql dbname=postgres")


@dataclass(frozen=True)
class BenchDatabase:
    name: str
    url: str  # for SQLAlchemy and SWITCHBOARD_DATABASE_URL
    dsn: str  # for psycopg

    @classmethod
    def create(cls) -> BenchDatabase:
        name = f"switchboard_bench_{secrets.token_hex(3)}"
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            host, port, user = admin.info.host, admin.info.port, admin.info.user
        return cls(
            name,
            f"postgresql+psycopg://{user}@/{name}?host={host}&port={port}",
            f"host={host} port={port} user={user} dbname={name}",
        )

    def drop(self) -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


def settle(connection: psycopg.Connection[object]) -> None:
    """Commit what a benchmark loaded and leave its tables as autovacuum leaves tables of that age: statistics,
    and the visibility map (index-only scans)."""
    connection.commit()
    connection.autocommit = True
    connection.execute("VACUUM ANALYZE")


def explain(
    connection: Connection, statement: Executable, values: dict[str, Any], *, analyze: bool = False
) -> list[str]:
    """The plan Postgres picks for one of the API's own statements with ``values`` bound (EXPLAIN, or EXPLAIN
    ANALYZE: run too), a line per row."""
    compiled = statement.compile(dialect=connection.dialect)
    query = f"EXPLAIN {'(ANALYZE) ' if analyze else ''}{compiled}"
    return list(connection.exec_driver_sql(query, {**compiled.params, **values}).scalars())
