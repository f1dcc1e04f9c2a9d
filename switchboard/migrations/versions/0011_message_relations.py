"""message relations: replies, reactions, edits and unsends (a relation is a message naming its target)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("relates_kind", sa.String(length=8), nullable=True))
    op.add_column("messages", sa.Column("relates_to_seq", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("unsent_at", sa.DateTime(timezone=True), nullable=True))
    # The relations of a page of messages (reactions to show, edits to wipe on unsend), found by their target.
    # Partial: plain messages, nearly all of them, are not in it. On Postgres an index on the partitioned
    # table is created on every partition, and on those made later.
    op.create_index(
        "ix_messages_conversation_relates",
        "messages",
        ["conversation_id", "relates_to_seq"],
        unique=False,
        postgresql_where=sa.text("relates_to_seq IS NOT NULL"),
        sqlite_where=sa.text("relates_to_seq IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_conversation_relates", table_name="messages")
    for name in ("unsent_at", "edited_at", "relates_to_seq", "relates_kind"):
        op.drop_column("messages", name)
