"""What every open dashboard tab reads once a second (broker/api/pages.py, the live stream) and the incidents
page reads on each load, through indexes instead of walking a year of rows:

- incidents (closed_at): the incidents closed since the stream began, beside the open ones (which the state
  index already finds), so the stream's OR is two index lookups;
- commands (issued_at): the last 24 hours of commands of every site (the per-device index starts with the key).

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("incidents_closed", "incidents", ["closed_at"])
    op.create_index("commands_issued", "commands", ["issued_at"])


def downgrade() -> None:
    op.drop_index("commands_issued", "commands")
    op.drop_index("incidents_closed", "incidents")
