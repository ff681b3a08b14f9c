"""Ratings (好差评): proxy-rating flags for review and the negative-rating follow-up ledger.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rating_flags",
        sa.Column("event_id", sa.String(36), primary_key=True, comment="the rating.submitted event"),
        sa.Column("pattern", sa.String(24), primary_key=True, comment="paused|no_service|burst|burst_top|too_fast|..."),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("staff_id", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("rated_at", UtcDateTime, nullable=False),
        sa.Column("detail", sa.String(500), nullable=False, comment="why, in Chinese"),
        sa.Column("flagged_at", UtcDateTime, nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", UtcDateTime, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True, comment="proxy (代评属实) | honest (正常评价)"),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        comment="suspected proxy ratings (SJ 001:1033) for a person to review; the rating itself is never changed",
    )
    op.create_index("rating_flags_site_rated", "rating_flags", ["site", "rated_at"])
    op.create_table(
        "rating_followups",
        sa.Column("event_id", sa.String(36), primary_key=True, comment="the negative rating.submitted event"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("staff_id", sa.String(64), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=True),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("rated_at", UtcDateTime, nullable=False),
        sa.Column(
            "arrived_at", UtcDateTime, nullable=False, comment="deadlines count from this or rated_at, the later"
        ),
        sa.Column("real_name", sa.Boolean, nullable=False, comment="bound to a ticket or 办件: can be answered"),
        sa.Column("opened_at", UtcDateTime, nullable=False),
        sa.Column("reply_due", UtcDateTime, nullable=True, comment="real-name ones only (SJ 001:896)"),
        sa.Column("replied_at", UtcDateTime, nullable=True),
        sa.Column("replied_by", sa.String(64), nullable=True),
        sa.Column("reply_text", sa.Text, nullable=True),
        sa.Column("objective", sa.Boolean, nullable=True, comment="客观差评; null until someone decides"),
        sa.Column("rectify_due", UtcDateTime, nullable=True, comment="objective ones only"),
        sa.Column("rectified_at", UtcDateTime, nullable=True),
        sa.Column("rectified_by", sa.String(64), nullable=True),
        sa.Column("rectify_text", sa.Text, nullable=True),
        sa.Column("reply_alerted_at", UtcDateTime, nullable=True, comment="the reply-overdue notice went out"),
        sa.Column("rectify_alerted_at", UtcDateTime, nullable=True, comment="the rectify-overdue notice went out"),
        comment="one per negative rating (差评): reply and rectification against SJ 001:896's 100 % targets",
    )
    op.create_index("rating_followups_site_rated", "rating_followups", ["site", "rated_at"])
    op.create_index("rating_followups_reply_due", "rating_followups", ["reply_due"])
    op.create_index("rating_followups_rectify_due", "rating_followups", ["rectify_due"])


def downgrade() -> None:
    op.drop_index("rating_followups_rectify_due", table_name="rating_followups")
    op.drop_index("rating_followups_reply_due", table_name="rating_followups")
    op.drop_index("rating_followups_site_rated", table_name="rating_followups")
    op.drop_table("rating_followups")
    op.drop_index("rating_flags_site_rated", table_name="rating_flags")
    op.drop_table("rating_flags")
