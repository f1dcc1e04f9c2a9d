"""Alembic environment: runs migrations on the connection :func:`switchboard.db.upgrade` hands in."""

from alembic import context
from sqlmodel import SQLModel

import switchboard.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from switchboard.partitions import skip_partitions

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=skip_partitions,  # the models describe messages, not its monthly partitions
)
with context.begin_transaction():
    context.run_migrations()
