"""The spine: devices, presence history, events, dead letters.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("key", sa.String(140), primary_key=True, comment="{site}/{device}"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False, server_default=""),
        sa.Column("agent_version", sa.String(32), nullable=False, server_default=""),
        sa.Column("presence", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("presence_since", UtcDateTime, nullable=True),
        sa.Column("session", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("boot_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("heartbeat_s", sa.Float, nullable=False, server_default="60"),
        sa.Column("first_seen", UtcDateTime, nullable=False),
        sa.Column("last_seen", UtcDateTime, nullable=True),
        sa.Column("stale_after", UtcDateTime, nullable=True, comment="last_seen + stale factor x heartbeat"),
    )
    op.create_index("devices_site", "devices", ["site"])
    op.create_index("devices_stale", "devices", ["presence", "stale_after"])
    op.create_table(
        "presence_history",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(140), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("session", sa.BigInteger, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index("presence_history_key_at", "presence_history", ["key", "at"])
    op.create_table(
        "events",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(36), primary_key=True, comment="device-unique event id (UUIDv7)"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("ts", UtcDateTime, nullable=False, comment="device wall clock"),
        sa.Column("clock_synced", sa.Boolean, nullable=False),
        sa.Column("replayed", sa.Boolean, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False, comment="consumer clock"),
        sa.Column("data", sa.Text, nullable=False, comment="typed payload as JSON"),
    )
    op.create_index("events_device_seq", "events", ["site", "device", "seq"])
    op.create_index("events_type_ts", "events", ["type", "ts"])
    op.create_table(
        "dead_letters",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.create_index("dead_letters_received", "dead_letters", ["received_at"])


def downgrade() -> None:
    for table in ("dead_letters", "events", "presence_history", "devices"):
        op.drop_table(table)
