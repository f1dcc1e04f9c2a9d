"""presence and receipts

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('presence',
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_name')
    )
    op.create_table('receipts',
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', sa.String(length=140), nullable=False),
    sa.Column('delivered_seq', sa.BigInteger(), nullable=False),
    sa.Column('read_seq', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_name', 'conversation_id')
    )


def downgrade() -> None:
    op.drop_table('receipts')
    op.drop_table('presence')
