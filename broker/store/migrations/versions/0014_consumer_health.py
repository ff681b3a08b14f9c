"""Each consumer's own report of its health (broker/jobs/health.py), read by the dashboard's store banner:
running, waiting for the store (since when, the last error) or stopped, and when it last committed.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_health",
        sa.Column("instance", sa.String(64), primary_key=True, comment="the consumer's instance name"),
        sa.Column("state", sa.String(16), nullable=False, comment="running | waiting (for the store) | stopped"),
        sa.Column("updated_at", UtcDateTime, nullable=False, comment="the consumer's latest report"),
        sa.Column("every_s", sa.Float, nullable=False, comment="its report interval: stale past 3 of them"),
        sa.Column("last_commit_at", UtcDateTime, nullable=True, comment="the latest report that saw a batch commit"),
        sa.Column("waiting_since", UtcDateTime, nullable=True, comment="ingest waits for the store since then"),
        sa.Column("last_error", sa.String(200), nullable=True, comment="the store's last error while waiting"),
        comment="one row per consumer instance, rewritten every few seconds (broker/jobs/health.py)",
    )


def downgrade() -> None:
    op.drop_table("consumer_health")
