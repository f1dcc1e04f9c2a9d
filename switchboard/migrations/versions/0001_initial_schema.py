"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

# BIGINT ids on Postgres; SQLite only auto-increments a column declared INTEGER PRIMARY KEY.
ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('conversations',
    sa.Column('id', sa.String(length=140), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('groups',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('rejected_messages',
    sa.Column('id', ID_TYPE, autoincrement=True, nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('users',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('group_members',
    sa.Column('group_name', sa.String(length=64), nullable=False),
    sa.Column('user_name', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['group_name'], ['groups.name'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_name'], ['users.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_name', 'user_name')
    )
    op.create_index('ix_group_members_user', 'group_members', ['user_name'], unique=False)
    op.create_table('messages',
    sa.Column('id', ID_TYPE, autoincrement=True, nullable=False),
    sa.Column('conversation_id', sa.String(length=140), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('client_msg_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('topic', sa.String(length=256), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('conversation_id', 'seq', name='uq_messages_conversation_seq'),
    sa.UniqueConstraint('sender', 'client_msg_id', name='uq_messages_sender_client_msg_id')
    )


def downgrade() -> None:
    op.drop_table('messages')
    op.drop_index('ix_group_members_user', table_name='group_members')
    op.drop_table('group_members')
    op.drop_table('users')
    op.drop_table('rejected_messages')
    op.drop_table('groups')
    op.drop_table('conversations')
