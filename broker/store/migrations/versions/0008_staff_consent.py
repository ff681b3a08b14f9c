"""Staff consent to face enrolment: who agreed, when, on what evidence, and when they withdrew.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_consents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False, comment="face_attendance (人脸考勤)"),
        sa.Column("given_at", UtcDateTime, nullable=False, comment="when the person signed"),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("evidence", sa.String(200), nullable=False, comment="the signed form's reference"),
        sa.Column("withdrawn_at", UtcDateTime, nullable=True),
        sa.Column("withdrawn_by", sa.String(64), nullable=True),
        comment="consent to face enrolment (provisioning/staff.py): no face is enrolled without one not withdrawn",
    )
    op.create_index("staff_consents_site_staff", "staff_consents", ["site", "staff_id"])


def downgrade() -> None:
    op.drop_index("staff_consents_site_staff", table_name="staff_consents")
    op.drop_table("staff_consents")
