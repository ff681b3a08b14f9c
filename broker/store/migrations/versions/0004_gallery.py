"""Face galleries per site: staff encodings (never photos), their versions and revocations.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_gallery",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.String(64), primary_key=True),
        sa.Column("encodings", sa.LargeBinary, nullable=True, comment="float32 (k, 128); NULL once revoked"),
        sa.Column("shots", sa.Integer, nullable=False),
        sa.Column("version_added", sa.Integer, nullable=False, comment="gallery version that (re)enrolled them"),
        sa.Column("version_removed", sa.Integer, nullable=True, comment="gallery version that revoked them"),
        sa.Column("enrolled_at", UtcDateTime, nullable=False),
        sa.Column("enrolled_by", sa.String(64), nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("revoked_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("revoke_by", UtcDateTime, nullable=True, comment="every terminal must have dropped them by then"),
    )
    op.create_table(
        "gallery_sites",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gallery_sites")
    op.drop_table("face_gallery")
