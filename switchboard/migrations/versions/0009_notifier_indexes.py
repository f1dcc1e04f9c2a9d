"""notifier indexes: partial indexes on the outbox rows waiting for a batch and on unsent batches

The notifier's queries (bridge/batching.py) read only rows waiting for a batch (by user, oldest first) and
rows of batches not yet sent (by batch id, and by when their next attempt is due); sent rows, which pile
up, are in neither index. They replace ix_notifications_pending, which indexed every row.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UNBATCHED = sa.column("batch_id").is_(None)
IN_FLIGHT = sa.and_(sa.column("batch_id").is_not(None), sa.column("sent_at").is_(None))


def upgrade() -> None:
    op.create_index(
        "ix_notifications_unbatched",
        "notifications",
        ["user_name", "created_at", "id"],
        postgresql_where=UNBATCHED,
        sqlite_where=UNBATCHED,
    )
    op.create_index(
        "ix_notifications_in_flight",
        "notifications",
        ["batch_id"],
        postgresql_where=IN_FLIGHT,
        sqlite_where=IN_FLIGHT,
    )
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at", "batch_id"],
        postgresql_where=IN_FLIGHT,
        sqlite_where=IN_FLIGHT,
    )
    op.drop_index("ix_notifications_pending", table_name="notifications")


def downgrade() -> None:
    op.create_index("ix_notifications_pending", "notifications", ["sent_at", "batch_id", "user_name"], unique=False)
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_index("ix_notifications_in_flight", table_name="notifications")
    op.drop_index("ix_notifications_unbatched", table_name="notifications")
