"""change streams for /v1/sync and the directory watch

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_positions",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    for table in ("messages", "receipts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("stream_pos", sa.BigInteger(), nullable=False, server_default="0"))
    # Rows stored before this revision: messages in id order, receipts in any order, all before new ones.
    op.execute("UPDATE messages SET stream_pos = id")
    op.execute("UPDATE receipts SET stream_pos = 1")
    op.execute("INSERT INTO stream_positions (name, position) SELECT 'messages', COALESCE(MAX(id), 0) FROM messages")
    op.execute("INSERT INTO stream_positions (name, position) VALUES ('receipts', 1), ('directory', 0)")
    op.create_index("ix_messages_conversation_stream", "messages", ["conversation_id", "stream_pos"], unique=False)
    op.create_index("ix_receipts_conversation_stream", "receipts", ["conversation_id", "stream_pos"], unique=False)
    op.create_table(
        "directory_events",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("change", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("position"),
    )
    op.create_index("ix_directory_events_user", "directory_events", ["user_name", "position"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_directory_events_user", table_name="directory_events")
    op.drop_table("directory_events")
    op.drop_index("ix_receipts_conversation_stream", table_name="receipts")
    op.drop_index("ix_messages_conversation_stream", table_name="messages")
    for table in ("messages", "receipts"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("stream_pos")
    op.drop_table("stream_positions")
