"""One outage, one incident: the conditions an incident is made of (offline, kiosk down, application faults,
a staff report), each with when it began and cleared; and the 24-hour status of a device as IT registered it.

Existing incidents get one condition each (their own kind, from detection to clear), so the report's downtime
reads the same before and after. A device with several open outage incidents at upgrade time (the old
one-incident-per-kind rule) keeps them: the earliest becomes the device's outage, which new conditions join;
the others close as their own conditions clear.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from broker.store.schema import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SLA_SEVERITIES = ("critical", "major")  # broker/rules/incidents.py: the conditions the SLA clock runs for


def upgrade() -> None:
    op.create_table(
        "incident_conditions",
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
            comment="{key}|{kind} while active, then NULL: a condition is active at most once",
        ),
        sa.Column("summary", sa.String(500), nullable=False, server_default=""),
        sa.UniqueConstraint("open_key"),
        comment="what an incident is made of: one outage, several conditions (probe failures, offline, staff report)",
    )
    op.create_index("incident_conditions_incident", "incident_conditions", ["incident_id", "id"])
    op.create_index("incident_conditions_key_kind", "incident_conditions", ["key", "kind", "id"])
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column(
                "hours24",
                sa.Boolean(),
                nullable=True,
                comment="24-hour device (SLA counts wall-clock time), as IT registered it; NULL: not registered",
            )
        )
    _conditions_of_existing_incidents()


def _conditions_of_existing_incidents() -> None:
    conn = op.get_bind()
    inc = sa.table(
        "incidents",
        *(sa.column(n) for n in ("id", "key", "kind", "severity", "state", "open_key", "summary", "device")),
        sa.column("detected_at", UtcDateTime),
        sa.column("cleared_at", UtcDateTime),
        sa.column("closed_at", UtcDateTime),
        sa.column("last_signal_at", UtcDateTime),
    )
    cond = sa.table(
        "incident_conditions",
        *(sa.column(n) for n in ("incident_id", "key", "kind", "severity", "open_key", "summary")),
        sa.column("began_at", UtcDateTime),
        sa.column("seen_at", UtcDateTime),
        sa.column("cleared_at", UtcDateTime),
        sa.column("last_signal_at", UtcDateTime),
    )
    rows = conn.execute(sa.select(inc).where(inc.c.device != "*").order_by(inc.c.detected_at)).all()
    outage_of: set[str] = set()
    for r in rows:
        active = r.state == "open"
        conn.execute(
            cond.insert().values(
                incident_id=r.id,
                key=r.key,
                kind=r.kind,
                severity=r.severity,
                began_at=r.detected_at,
                seen_at=r.detected_at,
                cleared_at=None if active else (r.cleared_at or r.closed_at),
                last_signal_at=r.last_signal_at,
                open_key=f"{r.key}|{r.kind}" if active else None,
                summary=r.summary,
            )
        )
        if r.state != "closed" and r.severity in _SLA_SEVERITIES and r.key not in outage_of:
            outage_of.add(r.key)
            conn.execute(inc.update().where(inc.c.id == r.id).values(open_key=f"{r.key}|outage"))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("hours24")
    op.drop_index("incident_conditions_key_kind", table_name="incident_conditions")
    op.drop_index("incident_conditions_incident", table_name="incident_conditions")
    op.drop_table("incident_conditions")
