"""Incidents with their SLA clock and timeline, notifications to deliver, on-site dispatches, site-staff tasks
(restock, cleaning, inspection), consumable levels and service records.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumable_levels",
        sa.Column("key", sa.String(length=140), nullable=False),
        sa.Column("consumable", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("level_pct", sa.Float(), nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False, comment="device time of the newest reading"),
        sa.Column("low_since", UtcDateTime, nullable=True),
        sa.Column("usage_at_low", sa.BigInteger(), nullable=True, comment="usage counter when it first read low"),
        sa.Column("empty_forecast", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("key", "consumable"),
    )
    op.create_table(
        "dispatches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=140), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("opened_at", UtcDateTime, nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False, comment="end of the working day, rolled after hours"),
        sa.Column("state", sa.String(length=16), nullable=False, comment="open|on_site|done|cancelled"),
        sa.Column("technician", sa.String(length=64), server_default="", nullable=False),
        sa.Column("arrived_at", UtcDateTime, nullable=True),
        sa.Column("done_at", UtcDateTime, nullable=True),
        sa.Column("overdue_notified", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("note", sa.String(length=1000), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id"),
    )
    op.create_index("dispatches_state_due", "dispatches", ["state", "due_at"], unique=False)
    op.create_table(
        "incident_timeline",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(length=36), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("entry", sa.String(length=16), nullable=False, comment="signal|step|command|notify|ack|note|state"),
        sa.Column("actor", sa.String(length=64), server_default="rules", nullable=False),
        sa.Column("text", sa.String(length=1000), nullable=False),
        sa.Column("detail", sa.Text(), server_default="{}", nullable=False, comment="JSON evidence"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("incident_timeline_incident", "incident_timeline", ["incident_id", "id"], unique=False)
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "key", sa.String(length=140), nullable=False, comment="{site}/{device}, or {site}/* for a hall-wide outage"
        ),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column(
            "kind", sa.String(length=64), nullable=False, comment="offline, kiosk_down, fault.app, consumable.x ..."
        ),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("device_class", sa.String(length=32), server_default="", nullable=False),
        sa.Column("hours24", sa.Boolean(), nullable=False, comment="SLA counts wall-clock time, not opening hours"),
        sa.Column("state", sa.String(length=16), nullable=False, comment="open | recovering | closed"),
        sa.Column(
            "open_key",
            sa.String(length=220),
            nullable=True,
            comment="{key}|{kind} until closed, then NULL: at most one open incident per (device, kind)",
        ),
        sa.Column("summary", sa.String(length=500), server_default="", nullable=False),
        sa.Column("detected_at", UtcDateTime, nullable=False, comment="SLA start: first authoritative signal"),
        sa.Column("staff_reported_at", UtcDateTime, nullable=True, comment="when site staff reported it"),
        sa.Column("last_signal_at", UtcDateTime, nullable=False, comment="device time of the newest signal applied"),
        sa.Column("cleared_at", UtcDateTime, nullable=True, comment="the condition went away (recovery unverified)"),
        sa.Column("closed_at", UtcDateTime, nullable=True),
        sa.Column(
            "recovery", sa.String(length=16), server_default="", nullable=False, comment="self_healed|remote|on_site"
        ),
        sa.Column("recovered_by", sa.String(length=140), server_default="", nullable=False),
        sa.Column(
            "step", sa.String(length=16), server_default="new", nullable=False, comment="new|acted|warned|breached"
        ),
        sa.Column("next_step_at", UtcDateTime, nullable=True),
        sa.Column("breached_at", UtcDateTime, nullable=True),
        sa.Column("breach_reason", sa.String(length=500), server_default="", nullable=False),
        sa.Column("notified_at", UtcDateTime, nullable=True, comment="first page sent: escalation counts from here"),
        sa.Column("acked_at", UtcDateTime, nullable=True),
        sa.Column("acked_by", sa.String(length=64), server_default="", nullable=False),
        sa.Column("escalation_level", sa.Integer(), server_default="0", nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True, comment="the hall-wide outage that covers it"),
        sa.Column("flaps", sa.Integer(), server_default="0", nullable=False, comment="reopened within the flap window"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index("incidents_key_kind", "incidents", ["key", "kind", "closed_at"], unique=False)
    op.create_index("incidents_site_detected", "incidents", ["site", "detected_at"], unique=False)
    op.create_index("incidents_state_next", "incidents", ["state", "next_step_at"], unique=False)
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=300), nullable=False, comment="{ref}|{step}|{recipient}"),
        sa.Column("ref", sa.String(length=80), nullable=False, comment="incident:{id} or task:{id}"),
        sa.Column("step", sa.String(length=24), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=500), nullable=True),
        sa.Column("data", sa.Text(), server_default="{}", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False, comment="pending|sent|failed|suppressed"),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False, comment="quiet hours and retries move it"),
        sa.Column("claimed_until", UtcDateTime, nullable=True, comment="a sender is on it (several consumers)"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=1000), server_default="", nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index("notifications_ref", "notifications", ["ref"], unique=False)
    op.create_index("notifications_state_due", "notifications", ["state", "due_at"], unique=False)
    op.create_table(
        "service_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=140), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="clean|inspection|refill|on_site"),
        sa.Column("item", sa.String(length=64), server_default="", nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=1000), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("service_records_key_kind_at", "service_records", ["key", "kind", "at"], unique=False)
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=140), nullable=False, comment="{site}/{device}"),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="restock|clean|inspection"),
        sa.Column("item", sa.String(length=64), server_default="", nullable=False, comment="consumable, or the period"),
        sa.Column("open_key", sa.String(length=240), nullable=True, comment="{key}|{kind}|{item} while open"),
        sa.Column("state", sa.String(length=16), nullable=False, comment="open|done|cancelled"),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("reason", sa.String(length=500), server_default="", nullable=False),
        sa.Column("overdue_notified", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("done_at", UtcDateTime, nullable=True),
        sa.Column("done_by", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index("tasks_site_state", "tasks", ["site", "state"], unique=False)


def downgrade() -> None:
    op.drop_index("tasks_site_state", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("service_records_key_kind_at", table_name="service_records")
    op.drop_table("service_records")
    op.drop_index("notifications_state_due", table_name="notifications")
    op.drop_index("notifications_ref", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("incidents_state_next", table_name="incidents")
    op.drop_index("incidents_site_detected", table_name="incidents")
    op.drop_index("incidents_key_kind", table_name="incidents")
    op.drop_table("incidents")
    op.drop_index("incident_timeline_incident", table_name="incident_timeline")
    op.drop_table("incident_timeline")
    op.drop_index("dispatches_state_due", table_name="dispatches")
    op.drop_table("dispatches")
    op.drop_table("consumable_levels")
