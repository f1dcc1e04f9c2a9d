"""The broker's Core table clauses (switchboard/schema.py) describe the tables the migrations create: each
column they name exists in the ORM table of the same name with the same Python type, and SCHEMA_HEAD is
the newest migration (the services check the database's revision against it without loading Alembic)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import TypeDecorator
from sqlalchemy.types import TypeEngine
from sqlmodel import SQLModel

import switchboard.tables  # noqa: F401  (registers the ORM tables on SQLModel.metadata)
from switchboard.db import MIGRATIONS, make_engine
from switchboard.schema import CORE_TABLES, SCHEMA_HEAD


def test_schema_head_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head == SCHEMA_HEAD, f"a migration was added: set SCHEMA_HEAD = {head!r} in switchboard/schema.py"


def test_core_clauses_name_only_columns_of_the_orm_tables() -> None:
    for clause in CORE_TABLES:
        orm = SQLModel.metadata.tables[clause.name]
        for column in clause.columns:
            assert column.name in orm.columns, f"{clause.name}.{column.name} is not a column of the ORM table"
            expected = orm.columns[column.name].type
            assert _python_type(column.type) is _python_type(expected), (
                f"{clause.name}.{column.name}: {column.type!r} in switchboard/schema.py, {expected!r} in the ORM table"
            )


def _python_type(kind: TypeEngine[object]) -> type:
    """What a column holds in Python (SQLModel's AutoString and our UtcDateTime decorate String and DateTime)."""
    return (kind.impl if isinstance(kind, TypeDecorator) else kind).python_type


def test_sqlite_connections_keep_a_small_page_cache(tmp_path: Path) -> None:
    """SQLite's default 2 MiB page cache per pooled connection cost the broker ~3 MB at 10,000 users (issue 14)."""
    engine = make_engine(f"sqlite:///{tmp_path}/cache.db")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -512
    finally:
        engine.dispose()
