"""messages partitioned by month on Postgres; uniqueness kept in message_keys

Revision ID: 0006
Revises: 0005

Postgres requires a unique constraint on a partitioned table to include the partition key, so
``(conversation_id, seq)`` and ``(sender, client_msg_id)`` could no longer be enforced on ``messages``.
Both move to ``message_keys``, one small row per message in an unpartitioned table (on both databases,
so the bridge has one way to store). On Postgres ``messages`` is then rebuilt as a table partitioned by
range of ``stored_at``, one partition per month (switchboard/partitions.py), rows and ids kept.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from switchboard.partitions import DEFAULT_PARTITION, ensure_message_partitions, month_start

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = "id, conversation_id, seq, sender, client_msg_id, body, topic, payload, stored_at, stream_pos"


def upgrade() -> None:
    op.create_table(
        "message_keys",
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("client_msg_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=140), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender", "client_msg_id"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_message_keys_conversation_seq"),
    )
    op.execute(
        "INSERT INTO message_keys (sender, client_msg_id, conversation_id, seq, stored_at) "
        "SELECT sender, client_msg_id, conversation_id, seq, stored_at FROM messages"
    )
    if op.get_bind().dialect.name == "postgresql":
        _partition_messages()
    else:
        with op.batch_alter_table("messages") as batch:
            batch.drop_constraint("uq_messages_conversation_seq", type_="unique")
            batch.drop_constraint("uq_messages_sender_client_msg_id", type_="unique")
        op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"], unique=False)


def _partition_messages() -> None:
    connection = op.get_bind()
    op.execute("ALTER TABLE messages RENAME TO messages_unpartitioned")
    for index in ("messages_pkey", "uq_messages_conversation_seq", "uq_messages_sender_client_msg_id"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_old")
    op.execute("ALTER INDEX ix_messages_conversation_stream RENAME TO ix_messages_conversation_stream_old")
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY NONE")
    op.execute(
        """
        CREATE TABLE messages (
            id BIGINT NOT NULL DEFAULT nextval('messages_id_seq'),
            conversation_id VARCHAR(140) NOT NULL REFERENCES conversations (id),
            seq BIGINT NOT NULL,
            sender VARCHAR(64) NOT NULL,
            client_msg_id VARCHAR(64) NOT NULL,
            body TEXT NOT NULL,
            topic VARCHAR(256) NOT NULL,
            payload BYTEA NOT NULL,
            stored_at TIMESTAMP WITH TIME ZONE NOT NULL,
            stream_pos BIGINT NOT NULL DEFAULT 0,
            CONSTRAINT messages_pkey PRIMARY KEY (id, stored_at)
        ) PARTITION BY RANGE (stored_at)
        """
    )
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF messages DEFAULT")
    first = connection.execute(sa.text("SELECT MIN(stored_at) FROM messages_unpartitioned")).scalar()
    now = datetime.now(UTC)
    ensure_message_partitions(connection, now=now, since=month_start(first) if first is not None else now)
    op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_unpartitioned")
    op.execute("DROP TABLE messages_unpartitioned")
    op.execute("ALTER SEQUENCE messages_id_seq OWNED BY messages.id")
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"], unique=False)
    op.create_index("ix_messages_conversation_stream", "messages", ["conversation_id", "stream_pos"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages RENAME TO messages_partitioned")
        op.execute("ALTER INDEX ix_messages_conversation_stream RENAME TO ix_messages_conversation_stream_old")
        op.execute("ALTER INDEX ix_messages_conversation_seq RENAME TO ix_messages_conversation_seq_old")
        op.execute("ALTER TABLE messages_partitioned RENAME CONSTRAINT messages_pkey TO messages_pkey_old")
        op.execute("ALTER SEQUENCE messages_id_seq OWNED BY NONE")
        op.execute(
            """
            CREATE TABLE messages (
                id BIGINT NOT NULL DEFAULT nextval('messages_id_seq') PRIMARY KEY,
                conversation_id VARCHAR(140) NOT NULL REFERENCES conversations (id),
                seq BIGINT NOT NULL,
                sender VARCHAR(64) NOT NULL,
                client_msg_id VARCHAR(64) NOT NULL,
                body TEXT NOT NULL,
                topic VARCHAR(256) NOT NULL,
                payload BYTEA NOT NULL,
                stored_at TIMESTAMP WITH TIME ZONE NOT NULL,
                stream_pos BIGINT NOT NULL DEFAULT 0,
                CONSTRAINT uq_messages_conversation_seq UNIQUE (conversation_id, seq),
                CONSTRAINT uq_messages_sender_client_msg_id UNIQUE (sender, client_msg_id)
            )
            """
        )
        op.execute(f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_partitioned ORDER BY id")
        op.execute("DROP TABLE messages_partitioned")
        op.execute("ALTER SEQUENCE messages_id_seq OWNED BY messages.id")
        op.create_index("ix_messages_conversation_stream", "messages", ["conversation_id", "stream_pos"])
    else:
        op.drop_index("ix_messages_conversation_seq", table_name="messages")
        with op.batch_alter_table("messages") as batch:
            batch.create_unique_constraint("uq_messages_conversation_seq", ["conversation_id", "seq"])
            batch.create_unique_constraint("uq_messages_sender_client_msg_id", ["sender", "client_msg_id"])
    op.drop_table("message_keys")
