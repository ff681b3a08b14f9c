"""API and dashboard: users with roles scoped to sites, and their login sessions.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(200), nullable=False, comment="argon2id (argon2-cffi)"),
        sa.Column(
            "role", sa.String(32), nullable=False, comment="it_admin | technician | window_management | readonly"
        ),
        sa.Column(
            "sites", sa.String(1000), nullable=False, server_default="*", comment="comma-separated site ids, * = all"
        ),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("disabled_at", UtcDateTime, nullable=True, comment="cannot log in; sessions end"),
    )
    op.create_table(
        "api_sessions",
        sa.Column(
            "token_hash",
            sa.String(64),
            primary_key=True,
            comment="sha256 of the token: a leaked table logs no one in",
        ),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )
    op.create_index("api_sessions_username", "api_sessions", ["username"])
    op.create_index("api_sessions_expires", "api_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("api_sessions_expires", table_name="api_sessions")
    op.drop_index("api_sessions_username", table_name="api_sessions")
    op.drop_table("api_sessions")
    op.drop_table("users")
