"""Proxy clocking (SJ 001 「不应代替他人考勤」): suspected proxy punches for a person to review
(broker/attendance/proxy_clocking.py).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clocking_flags",
        sa.Column("event_id", sa.String(36), primary_key=True, comment="the attendance.punch event"),
        sa.Column("pattern", sa.String(24), primary_key=True, comment="chain|too_fast|after_refusal|on_leave"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("punched_at", UtcDateTime, nullable=False, comment="the time the attendance rules use"),
        sa.Column("detail", sa.String(500), nullable=False, comment="why, in Chinese"),
        sa.Column("flagged_at", UtcDateTime, nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", UtcDateTime, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True, comment="proxy (属实代打卡) | honest (正常打卡)"),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        comment="suspected proxy clocking (SJ 001) for a person to review; a confirmed one stops counting, per site",
    )
    op.create_index("clocking_flags_site_punched", "clocking_flags", ["site", "punched_at"])


def downgrade() -> None:
    op.drop_index("clocking_flags_site_punched", table_name="clocking_flags")
    op.drop_table("clocking_flags")
