"""Commands with their state machine, the audit log, versioned desired config per device.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(140), nullable=False, comment="{site}/{device}"),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("args", sa.Text, nullable=False, comment="JSON"),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("result", sa.Text, nullable=True, comment="JSON result of a finished command"),
        sa.Column("refusal", sa.Text, nullable=False, server_default="", comment="why rejected or failed"),
    )
    op.create_index("commands_key_issued", "commands", ["key", "issued_at"])
    op.create_index("commands_state_expires", "commands", ["state", "expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BIGID, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False, comment="person, rule or device"),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(140), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}", comment="JSON"),
    )
    op.create_index("audit_log_target_at", "audit_log", ["target", "at"])
    op.create_table(
        "device_configs",
        sa.Column("key", sa.String(140), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False, comment="JSON desired config"),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column(
            "state",
            sa.String(16),
            nullable=False,
            server_default="desired",
            comment="desired|applied|rejected",
        ),
        sa.Column("reported_at", UtcDateTime, nullable=True),
        sa.Column("errors", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    for table in ("device_configs", "audit_log", "commands"):
        op.drop_table(table)
