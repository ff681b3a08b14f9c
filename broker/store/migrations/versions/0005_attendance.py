"""Attendance: the staff roster, exceptions filed for staff-days, and records locked at the correction deadline.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True, comment="pseudonymous id the terminals know"),
        sa.Column(
            "name", sa.String(64), nullable=False, server_default="", comment="centre only, never sent to devices"
        ),
        sa.Column("unit", sa.String(128), nullable=False, server_default="", comment="dispatching unit (派驻单位)"),
        sa.Column("window", sa.String(64), nullable=False, server_default=""),
        sa.Column("post", sa.String(1), nullable=False, server_default="", comment="A | B | '' (AB岗)"),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=True, comment="last day at the hall"),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "attendance_exceptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False, comment="leave|evidence|meeting|compensatory|duty|..."),
        sa.Column("start", UtcDateTime, nullable=False),
        sa.Column("end", UtcDateTime, nullable=False),
        sa.Column(
            "minutes", sa.Integer, nullable=False, server_default="0", comment="extended service: early sign-out"
        ),
        sa.Column("filed_at", UtcDateTime, nullable=False),
        sa.Column("filed_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("approved", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("late", sa.Boolean, nullable=False, comment="filed after the correction deadline of its first day"),
        sa.Column("withdrawn_at", UtcDateTime, nullable=True),
    )
    op.create_index("attendance_exceptions_site_staff_start", "attendance_exceptions", ["site", "staff_id", "start"])
    op.create_table(
        "attendance_locks",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("verdict", sa.String(32), nullable=False, comment="the abnormal verdict that stands (非正常考勤)"),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("locked_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "attendance_locked_days",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("locked_at", UtcDateTime, nullable=False),
        sa.Column("locked", sa.Integer, nullable=False, comment="abnormal staff-days locked for it"),
        comment="days whose records are final: a normal day stays normal whatever changes later",
    )


def downgrade() -> None:
    op.drop_table("attendance_locked_days")
    op.drop_table("attendance_locks")
    op.drop_index("attendance_exceptions_site_staff_start", table_name="attendance_exceptions")
    op.drop_table("attendance_exceptions")
    op.drop_table("staff")
