"""Hash chains over the audit log and the attendance corrections (broker/audit): record_chain holds one
link per record, record_chain_heads each chain's head per month; the records that exist already are chained
here, in the order of their time.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from broker.audit.chain import backfill
from broker.audit.sources import SOURCES

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_chain",
        sa.Column("chain", sa.String(16), primary_key=True, comment="audit | corrections"),
        sa.Column("month", sa.String(7), primary_key=True, comment="YYYY-MM of the record's time, China Standard Time"),
        sa.Column("seq", sa.Integer, primary_key=True, comment="1, 2, ... within the chain's month"),
        sa.Column("source", sa.String(32), nullable=False, comment="which kind of record (broker/audit/sources.py)"),
        sa.Column("ref", sa.String(300), nullable=False, comment="the record's key, canonical JSON"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, comment="SHA-256 of prev_hash and the record's content"),
        sa.UniqueConstraint("source", "ref", name="record_chain_source_ref"),
    )
    op.create_table(
        "record_chain_heads",
        sa.Column("chain", sa.String(16), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False, comment="the last link's seq; 0 before the first"),
        sa.Column("hash", sa.String(64), nullable=False, comment="the last link's hash: what monthly reports print"),
        comment="one row per chain and month, locked by each writer: appends serialise on it",
    )
    backfill(op.get_bind(), SOURCES)


def downgrade() -> None:
    op.drop_table("record_chain_heads")
    op.drop_table("record_chain")
