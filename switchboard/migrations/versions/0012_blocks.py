"""blocks: who blocked whom (DMs from a blocked user are refused, presence and typing hidden both ways)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column("blocker", sa.String(length=64), nullable=False),
        sa.Column("blocked", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blocker", "blocked"),
    )
    op.create_index("ix_blocks_blocked", "blocks", ["blocked", "blocker"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_blocks_blocked", table_name="blocks")
    op.drop_table("blocks")
