"""Signed events keep the bytes their signature covers (issue 24): a stored punch, rating or fault can then be
re-verified later (``hallfleet audit verify --chain events``), so altering its stored columns is detected, not
only a signature that failed once at ingest. Events stored before this keep NULL: checked once, not re-checkable.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import SIGNED_COMMENT

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("signed", sa.Text, nullable=True, comment=SIGNED_COMMENT))


def downgrade() -> None:
    op.drop_column("events", "signed")
