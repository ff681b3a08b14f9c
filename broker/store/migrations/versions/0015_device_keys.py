"""Device signatures (issue 24): each event keeps the key id and signature it was verified with, and the centre
holds the devices' public keys (pushed from the provisioning registry) with their rotation and revocation times.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("sig_key", sa.String(16), nullable=True, comment="id of the device key that signed it (issue 24)"),
    )
    op.add_column(
        "events",
        sa.Column("sig", sa.String(88), nullable=True, comment="Ed25519 signature, base64, verified on ingest"),
    )
    op.create_table(
        "device_keys",
        sa.Column("key_id", sa.String(16), primary_key=True, comment="SHA-256 of the public key, first 8 bytes, hex"),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(44), nullable=False, comment="Ed25519 public key, base64 (32 bytes)"),
        sa.Column("valid_from", UtcDateTime, nullable=False, comment="provisioned (or rotated in) then"),
        sa.Column("retired_at", UtcDateTime, nullable=True, comment="rotated out: signs only events before this"),
        sa.Column("revoked_at", UtcDateTime, nullable=True, comment="revoked: events it signed from then are refused"),
        sa.Index("device_keys_device", "site", "device"),
        comment="devices' signing keys, pushed from the provisioning registry (provisioning/centre.py)",
    )


def downgrade() -> None:
    op.drop_table("device_keys")
    op.drop_column("events", "sig")
    op.drop_column("events", "sig_key")
