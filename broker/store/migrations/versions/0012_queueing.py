"""Queue ticketing (排队叫号, broker/queueing): each ticket step once (queue_steps), and each ticket's wait in
each service's queue rebuilt from them (queue_waits), which the 10/30/60 alerts, the monthly report and the
dashboard's queue view read.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_steps",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True, comment="the site-local day of the step: numbers restart daily"),
        sa.Column("ticket", sa.String(16), primary_key=True),
        sa.Column("step", sa.String(16), primary_key=True, comment="issued, called, served, transferred, abandoned"),
        sa.Column("at", UtcDateTime, primary_key=True, comment="the queue system's time of the step"),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("window", sa.String(32), nullable=True),
        sa.Column("detail", sa.String(16), nullable=True, comment="channel, to_service, abandon reason or 'recall'"),
        sa.Column("event_id", sa.String(36), nullable=False, comment="the first event that reported it"),
        comment="each ticket step once, however many devices or re-sends reported it (broker/queueing/fold.py)",
    )
    op.create_table(
        "queue_waits",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("ticket", sa.String(16), primary_key=True),
        sa.Column("leg", sa.Integer, primary_key=True, comment="0 from the issue, n after the n-th transfer"),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("queued_at", UtcDateTime, nullable=True, comment="null: the issue was never reported"),
        sa.Column("called_at", UtcDateTime, nullable=True, comment="the first call: the wait ends here"),
        sa.Column("window", sa.String(32), nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False, comment="waiting, called, served, transferred, abandoned"),
        sa.Column("reason", sa.String(16), nullable=True, comment="abandoned: no_show, cancelled, day_closed"),
        comment="each ticket's wait in each service's queue, rebuilt from its steps (QP 000:368, broker/queueing)",
    )
    op.create_index("queue_waits_outcome", "queue_waits", ["site", "outcome", "day"])


def downgrade() -> None:
    op.drop_table("queue_waits")
    op.drop_table("queue_steps")
