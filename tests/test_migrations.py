"""The Alembic migrations create exactly the schema the SQLModel tables describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

import switchboard.tables  # noqa: F401  (registers the tables)
from switchboard.partitions import skip_partitions


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": skip_partitions})
        assert compare_metadata(context, SQLModel.metadata) == []
