"""Tables of the central store. Alembic migrations in ``migrations/versions`` create them; this module is
what the queries use. A change here needs a new migration (``tests/test_store.py`` checks they agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite keeps naive text: the zone is re-attached on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: every time here carries its zone")
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
    sa.Index("devices_site", "site"),
    sa.Index("devices_stale", "presence", "stale_after"),
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
    sa.Index("events_device_seq", "site", "device", "seq"),
    sa.Index("events_type_ts", "type", "ts"),
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
