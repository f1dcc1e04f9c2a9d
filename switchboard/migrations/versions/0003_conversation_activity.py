"""conversation activity and DM members

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE conversations SET updated_at = created_at")
    with op.batch_alter_table("conversations") as batch:
        batch.alter_column("updated_at", nullable=False)
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"], unique=False)
    op.create_table(
        "dm_members",
        sa.Column("conversation_id", sa.String(length=140), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "user_name"),
    )
    op.create_index("ix_dm_members_user", "dm_members", ["user_name"], unique=False)
    # DMs stored before this revision: both names are in the id (dm:{a}:{b}).
    op.execute(
        "INSERT INTO dm_members (conversation_id, user_name) "
        "SELECT id, substr(id, 4, instr(substr(id, 4), ':') - 1) FROM conversations WHERE kind = 'dm'"
        if op.get_bind().dialect.name == "sqlite"
        else "INSERT INTO dm_members (conversation_id, user_name) "
        "SELECT id, split_part(id, ':', 2) FROM conversations WHERE kind = 'dm'"
    )
    op.execute(
        "INSERT INTO dm_members (conversation_id, user_name) "
        "SELECT id, substr(substr(id, 4), instr(substr(id, 4), ':') + 1) FROM conversations "
        "WHERE kind = 'dm' ON CONFLICT DO NOTHING"
        if op.get_bind().dialect.name == "sqlite"
        else "INSERT INTO dm_members (conversation_id, user_name) "
        "SELECT id, split_part(id, ':', 3) FROM conversations WHERE kind = 'dm' ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    op.drop_index("ix_dm_members_user", table_name="dm_members")
    op.drop_table("dm_members")
    op.drop_index("ix_conversations_updated_at", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("updated_at")
