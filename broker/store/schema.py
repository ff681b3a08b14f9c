"""Tables of the central store. Alembic migrations in ``migrations/versions`` create them; this module is
what the queries use. A change here needs a new migration (``tests/test_store.py`` checks they agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAIVE_TIME = "naive datetime given to the store: every time here carries its zone"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite keeps naive text: the zone is re-attached on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(NAIVE_TIME)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("key", sa.String(140), primary_key=True, comment="{site}/{device}"),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("role", sa.String(32), nullable=False, server_default=""),
    sa.Column("agent_version", sa.String(32), nullable=False, server_default=""),
    sa.Column("presence", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("presence_since", UtcDateTime, nullable=True),
    sa.Column("session", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("boot_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("heartbeat_s", sa.Float, nullable=False, server_default="60"),
    sa.Column("first_seen", UtcDateTime, nullable=False),
    sa.Column("last_seen", UtcDateTime, nullable=True),
    sa.Column("stale_after", UtcDateTime, nullable=True, comment="last_seen + stale factor x heartbeat"),
    sa.Column(
        "hours24",
        sa.Boolean,
        nullable=True,
        comment="24-hour device (SLA counts wall-clock time), as IT registered it; NULL: not registered",
    ),
    sa.Index("devices_site", "site"),
    sa.Index("devices_stale", "presence", "stale_after"),
    sa.Index("devices_role_site", "role", "site"),
)

device_labels = sa.Table(
    "device_labels",
    metadata,
    sa.Column("key", sa.String(140), primary_key=True, comment="{site}/{device}"),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
    sa.Index("device_labels_name_value", "name", "value", "key"),
    comment="labels from the device's newest desired config (zone, window ...), for the overview's filter",
)

presence_history = sa.Table(
    "presence_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(140), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("session", sa.BigInteger, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Index("presence_history_key_at", "key", "at"),
)

SIGNED_COMMENT = "the exact JSON the device signed, kept so `hallfleet audit verify` can re-check the stored event"

events = sa.Table(
    "events",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("device", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True, comment="device-unique event id (UUIDv7)"),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("boot_id", sa.String(64), nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False, comment="device wall clock"),
    sa.Column("clock_synced", sa.Boolean, nullable=False),
    sa.Column("replayed", sa.Boolean, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False, comment="consumer clock"),
    sa.Column("data", sa.Text, nullable=False, comment="typed payload as JSON"),
    sa.Column("sig_key", sa.String(16), nullable=True, comment="id of the device key that signed it (issue 24)"),
    sa.Column("sig", sa.String(88), nullable=True, comment="Ed25519 signature, base64, verified on ingest"),
    sa.Column("signed", sa.Text, nullable=True, comment=SIGNED_COMMENT),
    sa.Index("events_device_seq", "site", "device", "seq"),
    sa.Index("events_type_ts", "type", "ts"),
    sa.Index("events_device_type_ts", "site", "device", "type", "ts"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("topic", sa.String(512), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Index("dead_letters_received", "received_at"),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(140), nullable=False, comment="{site}/{device}"),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("args", sa.Text, nullable=False, comment="JSON"),
    sa.Column("issuer", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("issued_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("result", sa.Text, nullable=True, comment="JSON result of a finished command"),
    sa.Column("refusal", sa.Text, nullable=False, server_default="", comment="why rejected or failed"),
    sa.Index("commands_key_issued", "key", "issued_at"),
    sa.Index("commands_state_expires", "state", "expires_at"),
    sa.Index("commands_issued", "issued_at"),  # the dashboard's last 24 hours, every site (migration 0017)
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False, comment="person, rule or device"),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(140), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}", comment="JSON"),
    sa.Index("audit_log_target_at", "target", "at"),
)

# Hash chains over the audit log and the attendance corrections (broker/audit): one link per record, in the
# writing transaction. The records' own tables stay as they are: a withdrawal updates its filing, so the
# link, not the row, carries the hash.
record_chain = sa.Table(
    "record_chain",
    metadata,
    sa.Column("chain", sa.String(16), primary_key=True, comment="audit | corrections"),
    sa.Column("month", sa.String(7), primary_key=True, comment="YYYY-MM of the record's time, China Standard Time"),
    sa.Column("seq", sa.Integer, primary_key=True, comment="1, 2, ... within the chain's month"),
    sa.Column("source", sa.String(32), nullable=False, comment="which kind of record (broker/audit/sources.py)"),
    sa.Column("ref", sa.String(300), nullable=False, comment="the record's key, canonical JSON"),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, comment="SHA-256 of prev_hash and the record's content"),
    sa.UniqueConstraint("source", "ref", name="record_chain_source_ref"),
)

record_chain_heads = sa.Table(
    "record_chain_heads",
    metadata,
    sa.Column("chain", sa.String(16), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, comment="the last link's seq; 0 before the first"),
    sa.Column("hash", sa.String(64), nullable=False, comment="the last link's hash: what monthly reports print"),
    comment="one row per chain and month, locked by each writer: appends serialise on it",
)

device_configs = sa.Table(
    "device_configs",
    metadata,
    sa.Column("key", sa.String(140), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False, comment="JSON desired config"),
    sa.Column("issuer", sa.String(64), nullable=False),
    sa.Column("issued_at", UtcDateTime, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="desired", comment="desired|applied|rejected"),
    sa.Column("reported_at", UtcDateTime, nullable=True),
    sa.Column("errors", sa.Text, nullable=False, server_default=""),
)

# -- incidents, the SLA clock and what they set in motion (broker/rules, broker/alerts) ---------------
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(140), nullable=False, comment="{site}/{device}, or {site}/* for a hall-wide outage"),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False, comment="offline, kiosk_down, fault.app, consumable.x ..."),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("device_class", sa.String(32), nullable=False, server_default=""),
    sa.Column("hours24", sa.Boolean, nullable=False, comment="SLA counts wall-clock time, not opening hours"),
    sa.Column("state", sa.String(16), nullable=False, comment="open | recovering | closed"),
    sa.Column(
        "open_key",
        sa.String(220),
        nullable=True,
        unique=True,
        comment="{key}|{kind} until closed, then NULL: at most one open incident per (device, kind)",
    ),
    sa.Column("summary", sa.String(500), nullable=False, server_default=""),
    sa.Column("detected_at", UtcDateTime, nullable=False, comment="SLA start: first authoritative signal"),
    sa.Column("staff_reported_at", UtcDateTime, nullable=True, comment="when site staff reported it"),
    sa.Column("last_signal_at", UtcDateTime, nullable=False, comment="device time of the newest signal applied"),
    sa.Column("cleared_at", UtcDateTime, nullable=True, comment="the condition went away (recovery unverified)"),
    sa.Column("closed_at", UtcDateTime, nullable=True),
    sa.Column("recovery", sa.String(16), nullable=False, server_default="", comment="self_healed|remote|on_site"),
    sa.Column("recovered_by", sa.String(140), nullable=False, server_default=""),
    sa.Column("step", sa.String(16), nullable=False, server_default="new", comment="new|acted|warned|breached"),
    sa.Column("next_step_at", UtcDateTime, nullable=True),
    sa.Column("breached_at", UtcDateTime, nullable=True),
    sa.Column("breach_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("notified_at", UtcDateTime, nullable=True, comment="first page sent: escalation counts from here"),
    sa.Column("acked_at", UtcDateTime, nullable=True),
    sa.Column("acked_by", sa.String(64), nullable=False, server_default=""),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("parent_id", sa.String(36), nullable=True, comment="the hall-wide outage that covers it"),
    sa.Column("flaps", sa.Integer, nullable=False, server_default="0", comment="reopened within the flap window"),
    sa.Index("incidents_key_kind", "key", "kind", "closed_at"),
    sa.Index("incidents_state_next", "state", "next_step_at"),
    sa.Index("incidents_site_detected", "site", "detected_at"),
    sa.Index("incidents_closed", "closed_at"),  # the live stream's recently closed (migration 0017)
)

incident_conditions = sa.Table(
    "incident_conditions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(36), nullable=False),
    sa.Column("key", sa.String(140), nullable=False, comment="{site}/{device}"),
    sa.Column("kind", sa.String(64), nullable=False, comment="offline, kiosk_down, fault.app.unhealthy ..."),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("began_at", UtcDateTime, nullable=False, comment="when it began (the device's since, else seen_at)"),
    sa.Column("seen_at", UtcDateTime, nullable=False, comment="when the centre learnt it"),
    sa.Column("cleared_at", UtcDateTime, nullable=True),
    sa.Column("last_signal_at", UtcDateTime, nullable=False, comment="device time of the newest signal applied"),
    sa.Column(
        "open_key",
        sa.String(220),
        nullable=True,
        unique=True,
        comment="{key}|{kind} while active, then NULL: a condition is active at most once",
    ),
    sa.Column("summary", sa.String(500), nullable=False, server_default=""),
    sa.Index("incident_conditions_incident", "incident_id", "id"),
    sa.Index("incident_conditions_key_kind", "key", "kind", "id"),
    comment="what an incident is made of: one outage, several conditions (probe failures, offline, staff report)",
)

incident_timeline = sa.Table(
    "incident_timeline",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(36), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("entry", sa.String(16), nullable=False, comment="signal|step|command|notify|ack|note|state"),
    sa.Column("actor", sa.String(64), nullable=False, server_default="rules"),
    sa.Column("text", sa.String(1000), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}", comment="JSON evidence"),
    sa.Index("incident_timeline_incident", "incident_id", "id"),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(300), nullable=False, unique=True, comment="{ref}|{step}|{recipient}"),
    sa.Column("ref", sa.String(80), nullable=False, comment="incident:{id} or task:{id}"),
    sa.Column("step", sa.String(24), nullable=False),
    sa.Column("recipient", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("link", sa.String(500), nullable=True),
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    sa.Column("state", sa.String(16), nullable=False, comment="pending|sent|failed|suppressed"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False, comment="quiet hours and retries move it"),
    sa.Column("claimed_until", UtcDateTime, nullable=True, comment="a sender is on it (several consumers)"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(1000), nullable=False, server_default=""),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Index("notifications_state_due", "state", "due_at"),
    sa.Index("notifications_ref", "ref"),
)

dispatches = sa.Table(
    "dispatches",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("incident_id", sa.String(36), nullable=False, unique=True),
    sa.Column("key", sa.String(140), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False, comment="end of the working day, rolled after hours"),
    sa.Column("state", sa.String(16), nullable=False, comment="open|on_site|done|cancelled"),
    sa.Column("technician", sa.String(64), nullable=False, server_default=""),
    sa.Column("arrived_at", UtcDateTime, nullable=True),
    sa.Column("done_at", UtcDateTime, nullable=True),
    sa.Column("overdue_notified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("note", sa.String(1000), nullable=False, server_default=""),
    sa.Index("dispatches_state_due", "state", "due_at"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(140), nullable=False, comment="{site}/{device}"),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, comment="restock|clean|inspection"),
    sa.Column("item", sa.String(64), nullable=False, server_default="", comment="consumable, or the period"),
    sa.Column("open_key", sa.String(240), nullable=True, unique=True, comment="{key}|{kind}|{item} while open"),
    sa.Column("state", sa.String(16), nullable=False, comment="open|done|cancelled"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("overdue_notified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("done_at", UtcDateTime, nullable=True),
    sa.Column("done_by", sa.String(64), nullable=False, server_default=""),
    sa.Index("tasks_site_state", "site", "state"),
)

consumable_levels = sa.Table(
    "consumable_levels",
    metadata,
    sa.Column("key", sa.String(140), primary_key=True),
    sa.Column("consumable", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("level_pct", sa.Float, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False, comment="device time of the newest reading"),
    sa.Column("low_since", UtcDateTime, nullable=True),
    sa.Column("usage_at_low", sa.BigInteger, nullable=True, comment="usage counter when it first read low"),
    sa.Column("empty_forecast", UtcDateTime, nullable=True),
    sa.Index("consumable_levels_state", "state"),
    sa.Index("consumable_levels_forecast", "empty_forecast"),
)

service_records = sa.Table(
    "service_records",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(140), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, comment="clean|inspection|refill|on_site"),
    sa.Column("item", sa.String(64), nullable=False, server_default=""),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("by", sa.String(64), nullable=False),
    sa.Column("note", sa.String(1000), nullable=False, server_default=""),
    sa.Index("service_records_key_kind_at", "key", "kind", "at"),
)

# -- face galleries (broker/gallery.py): encodings only, never photos ---------------------------------
face_gallery = sa.Table(
    "face_gallery",
    metadata,
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

gallery_sites = sa.Table(
    "gallery_sites",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

staff_consents = sa.Table(
    "staff_consents",
    metadata,
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
    sa.Index("staff_consents_site_staff", "site", "staff_id"),
    comment="consent to face enrolment (provisioning/staff.py): no face is enrolled without one not withdrawn",
)

# -- attendance (broker/attendance): the roster, exceptions people file, records locked at the deadline -
staff = sa.Table(
    "staff",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("staff_id", sa.String(64), primary_key=True, comment="pseudonymous id the terminals know"),
    sa.Column("name", sa.String(64), nullable=False, server_default="", comment="centre only, never sent to devices"),
    sa.Column("unit", sa.String(128), nullable=False, server_default="", comment="dispatching unit (派驻单位)"),
    sa.Column("window", sa.String(64), nullable=False, server_default=""),
    sa.Column("post", sa.String(1), nullable=False, server_default="", comment="A | B | '' (AB岗)"),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=True, comment="last day at the hall"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

attendance_exceptions = sa.Table(
    "attendance_exceptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("staff_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, comment="leave|evidence|meeting|compensatory|duty|..."),
    sa.Column("start", UtcDateTime, nullable=False),
    sa.Column("end", UtcDateTime, nullable=False),
    sa.Column("minutes", sa.Integer, nullable=False, server_default="0", comment="extended service: early sign-out"),
    sa.Column("filed_at", UtcDateTime, nullable=False),
    sa.Column("filed_by", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("approved", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("late", sa.Boolean, nullable=False, comment="filed after the correction deadline of its first day"),
    sa.Column("withdrawn_at", UtcDateTime, nullable=True),
    sa.Index("attendance_exceptions_site_staff_start", "site", "staff_id", "start"),
)

attendance_locks = sa.Table(
    "attendance_locks",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("staff_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("verdict", sa.String(32), nullable=False, comment="the abnormal verdict that stands (非正常考勤)"),
    sa.Column("reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("locked_at", UtcDateTime, nullable=False),
)

attendance_locked_days = sa.Table(
    "attendance_locked_days",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("locked_at", UtcDateTime, nullable=False),
    sa.Column("locked", sa.Integer, nullable=False, comment="abnormal staff-days locked for it"),
    comment="days whose records are final: a normal day stays normal whatever changes later",
)

# -- the API and dashboard (broker/api): people who log in, and their sessions ----------------------
users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(200), nullable=False, comment="argon2id (argon2-cffi)"),
    sa.Column("role", sa.String(32), nullable=False, comment="it_admin | technician | window_management | readonly"),
    sa.Column(
        "sites", sa.String(1000), nullable=False, server_default="*", comment="comma-separated site ids, * = all"
    ),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("disabled_at", UtcDateTime, nullable=True, comment="cannot log in; sessions end"),
)

api_sessions = sa.Table(
    "api_sessions",
    metadata,
    sa.Column(
        "token_hash", sa.String(64), primary_key=True, comment="sha256 of the token: a leaked table logs no one in"
    ),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Index("api_sessions_username", "username"),
    sa.Index("api_sessions_expires", "expires_at"),
)

rating_flags = sa.Table(
    "rating_flags",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True, comment="the rating.submitted event"),
    sa.Column("pattern", sa.String(24), primary_key=True, comment="paused|no_service|burst|burst_top|too_fast|..."),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("window", sa.String(32), nullable=False),
    sa.Column("staff_id", sa.String(64), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("rated_at", UtcDateTime, nullable=False),
    sa.Column("detail", sa.String(500), nullable=False, comment="why, in Chinese"),
    sa.Column("flagged_at", UtcDateTime, nullable=False),
    sa.Column("reviewed_by", sa.String(64), nullable=True),
    sa.Column("reviewed_at", UtcDateTime, nullable=True),
    sa.Column("verdict", sa.String(16), nullable=True, comment="proxy (代评属实) | honest (正常评价)"),
    sa.Column("note", sa.String(500), nullable=False, server_default=""),
    sa.Index("rating_flags_site_rated", "site", "rated_at"),
    comment="suspected proxy ratings (SJ 001:1033) for a person to review; the rating itself is never changed",
)

clocking_flags = sa.Table(
    "clocking_flags",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True, comment="the attendance.punch event"),
    sa.Column("pattern", sa.String(24), primary_key=True, comment="chain|too_fast|after_refusal|on_leave"),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("staff_id", sa.String(64), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("punched_at", UtcDateTime, nullable=False, comment="the time the attendance rules use"),
    sa.Column("detail", sa.String(500), nullable=False, comment="why, in Chinese"),
    sa.Column("flagged_at", UtcDateTime, nullable=False),
    sa.Column("reviewed_by", sa.String(64), nullable=True),
    sa.Column("reviewed_at", UtcDateTime, nullable=True),
    sa.Column("verdict", sa.String(16), nullable=True, comment="proxy (属实代打卡) | honest (正常打卡)"),
    sa.Column("note", sa.String(500), nullable=False, server_default=""),
    sa.Index("clocking_flags_site_punched", "site", "punched_at"),
    comment="suspected proxy clocking (SJ 001) for a person to review; a confirmed one stops counting, per site",
)

rating_followups = sa.Table(
    "rating_followups",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True, comment="the negative rating.submitted event"),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("window", sa.String(32), nullable=False),
    sa.Column("staff_id", sa.String(64), nullable=False),
    sa.Column("service_id", sa.String(64), nullable=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("rated_at", UtcDateTime, nullable=False),
    sa.Column("arrived_at", UtcDateTime, nullable=False, comment="deadlines count from this or rated_at, the later"),
    sa.Column("real_name", sa.Boolean, nullable=False, comment="bound to a ticket or 办件: can be answered"),
    sa.Column("opened_at", UtcDateTime, nullable=False),
    sa.Column("reply_due", UtcDateTime, nullable=True, comment="real-name ones only (SJ 001:896)"),
    sa.Column("replied_at", UtcDateTime, nullable=True),
    sa.Column("replied_by", sa.String(64), nullable=True),
    sa.Column("reply_text", sa.Text, nullable=True),
    sa.Column("objective", sa.Boolean, nullable=True, comment="客观差评; null until someone decides"),
    sa.Column("rectify_due", UtcDateTime, nullable=True, comment="objective ones only"),
    sa.Column("rectified_at", UtcDateTime, nullable=True),
    sa.Column("rectified_by", sa.String(64), nullable=True),
    sa.Column("rectify_text", sa.Text, nullable=True),
    sa.Column("reply_alerted_at", UtcDateTime, nullable=True, comment="the reply-overdue notice went out"),
    sa.Column("rectify_alerted_at", UtcDateTime, nullable=True, comment="the rectify-overdue notice went out"),
    sa.Index("rating_followups_site_rated", "site", "rated_at"),
    sa.Index("rating_followups_reply_due", "reply_due"),
    sa.Index("rating_followups_rectify_due", "rectify_due"),
    comment="one per negative rating (差评): reply and rectification against SJ 001:896's 100 % targets",
)

queue_steps = sa.Table(
    "queue_steps",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True, comment="the site-local day of the step: numbers restart daily"),
    sa.Column("ticket", sa.String(16), primary_key=True),
    sa.Column("step", sa.String(16), primary_key=True, comment="issued, called, served, transferred, abandoned"),
    sa.Column("at", UtcDateTime, primary_key=True, comment="the queue system's time of the step"),
    sa.Column("service", sa.String(16), nullable=False),
    sa.Column("window", sa.String(32), nullable=True),
    sa.Column("detail", sa.String(16), nullable=True, comment="channel, to_service, abandon reason or 'recall'"),
    sa.Column("event_id", sa.String(36), nullable=False, comment="the first event that reported it"),
    comment="each ticket step once, however many devices or re-sends reported it (broker/queueing/fold.py)",
)

queue_waits = sa.Table(
    "queue_waits",
    metadata,
    sa.Column("site", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("ticket", sa.String(16), primary_key=True),
    sa.Column("leg", sa.Integer, primary_key=True, comment="0 from the issue, n after the n-th transfer"),
    sa.Column("service", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("queued_at", UtcDateTime, nullable=True, comment="null: the issue was never reported"),
    sa.Column("called_at", UtcDateTime, nullable=True, comment="the first call: the wait ends here"),
    sa.Column("window", sa.String(32), nullable=True),
    sa.Column("ended_at", UtcDateTime, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False, comment="waiting, called, served, transferred, abandoned"),
    sa.Column("reason", sa.String(16), nullable=True, comment="abandoned: no_show, cancelled, day_closed"),
    sa.Index("queue_waits_outcome", "site", "outcome", "day"),
    comment="each ticket's wait in each service's queue, rebuilt from its steps (QP 000:368, broker/queueing)",
)

consumer_health = sa.Table(
    "consumer_health",
    metadata,
    sa.Column("instance", sa.String(64), primary_key=True, comment="the consumer's instance name"),
    sa.Column("state", sa.String(16), nullable=False, comment="running | waiting (for the store) | stopped"),
    sa.Column("updated_at", UtcDateTime, nullable=False, comment="the consumer's latest report"),
    sa.Column("every_s", sa.Float, nullable=False, comment="its report interval: stale past 3 of them"),
    sa.Column("last_commit_at", UtcDateTime, nullable=True, comment="the latest report that saw a batch commit"),
    sa.Column("waiting_since", UtcDateTime, nullable=True, comment="ingest waits for the store since then"),
    sa.Column("last_error", sa.String(200), nullable=True, comment="the store's last error while waiting"),
    comment="one row per consumer instance, rewritten every few seconds (broker/jobs/health.py)",
)

device_keys = sa.Table(
    "device_keys",
    metadata,
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
