"""media uploads, the conversations they were sent in, and messages' attachments

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("uploader", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uploader", "sha256", name="uq_media_uploader_sha256"),
    )
    op.create_table(
        "media_grants",
        sa.Column("media_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=140), nullable=False),
        sa.ForeignKeyConstraint(["media_id"], ["media.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("media_id", "conversation_id"),
    )
    op.create_index("ix_media_grants_conversation", "media_grants", ["conversation_id"], unique=False)
    # On Postgres this reaches every monthly partition of messages.
    op.add_column("messages", sa.Column("attachments", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("attachments")
    op.drop_index("ix_media_grants_conversation", table_name="media_grants")
    op.drop_table("media_grants")
    op.drop_table("media")
