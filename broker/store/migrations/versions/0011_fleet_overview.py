"""The fleet overview at 10,000 devices (broker/api/overview.py): indexes for what it and the device page read,
and the devices' labels as rows the label filter can look up.

- events (site, device, type, ts): a device's health history, its last usage counter and its levels, read
  without walking a year of that device's events (events_device_seq) or every device's events of a type
  (events_type_ts);
- consumable_levels (state) and (empty_forecast): the consumables that run out before the next restock
  window, found without reading every device's consumables;
- devices (role, site): the device-kind filter;
- device_labels: the labels IT gives a device in its desired config (``hallfleet cfg set``), one row each,
  replaced with every new desired config (broker/store/commands.py), so "zone=24h" is an index lookup and
  not a pattern over JSON.

Revision ID: 0011
Revises: 0010
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("events_device_type_ts", "events", ["site", "device", "type", "ts"])
    op.create_index("consumable_levels_state", "consumable_levels", ["state"])
    op.create_index("consumable_levels_forecast", "consumable_levels", ["empty_forecast"])
    op.create_index("devices_role_site", "devices", ["role", "site"])
    op.create_table(
        "device_labels",
        sa.Column("key", sa.String(140), primary_key=True, comment="{site}/{device}"),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
        comment="labels from the device's newest desired config (zone, window ...), for the overview's filter",
    )
    op.create_index("device_labels_name_value", "device_labels", ["name", "value", "key"])
    _labels_from_configs()


def _labels_from_configs() -> None:
    """Labels of the configs already set: the newest version of each device."""
    conn = op.get_bind()
    newest = sa.text(
        "SELECT c.key, c.body FROM device_configs c WHERE c.version ="
        " (SELECT max(v.version) FROM device_configs v WHERE v.key = c.key)"
    )
    rows = []
    for key, body in conn.execute(newest):
        try:
            labels = json.loads(body).get("labels") or {}
        except (ValueError, AttributeError):
            continue  # not an object: it carries no labels
        if isinstance(labels, dict):
            rows += [{"key": key, "name": str(n)[:64], "value": str(v)[:200]} for n, v in labels.items()]
    if rows:
        table = sa.table("device_labels", sa.column("key"), sa.column("name"), sa.column("value"))
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("device_labels_name_value", "device_labels")
    op.drop_table("device_labels")
    op.drop_index("devices_role_site", "devices")
    op.drop_index("consumable_levels_forecast", "consumable_levels")
    op.drop_index("consumable_levels_state", "consumable_levels")
    op.drop_index("events_device_type_ts", "events")
