"""The monthly report's sheet of suspected proxy clocking (broker/attendance/proxy_clocking.py): every flag of the
month, reviewed or not, so the bulletin shows what was suspected, what a reviewer decided and what is still open.
A punch confirmed as proxy clocking is highlighted: where the site's policy says so it no longer counts, and the
day it stood for is among the exception details with 未签到 or 未签退."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import tzinfo
from typing import Any

from broker.attendance.reports import Column, Row, Table, Word
from broker.attendance.roster import StaffMember

_COLUMNS = (
    Column("punched_at", "time"),
    Column("day", "date"),
    Column("unit"),
    Column("window"),
    Column("staff_id"),
    Column("name"),
    Column("device"),
    Column("method"),
    Column("clocking_pattern"),
    Column("reason"),
    Column("clocking_review"),
)


def clocking_table(
    flags: Sequence[Any], members: Iterable[StaffMember], period: str, *, zone: tzinfo, site_name: str = ""
) -> Table:
    """One row per flag (a punch may show two patterns), in time order; ``flags`` are clocking_flags rows."""
    people = {m.staff_id: m for m in members}
    rows = []
    for f in sorted(flags, key=lambda f: (f.punched_at, f.event_id, f.pattern)):
        m = people.get(f.staff_id)
        local = f.punched_at.astimezone(zone)
        review = f"clocking_{f.verdict}" if f.verdict else "clocking_pending"
        rows.append(
            Row(
                (
                    local, local.date(), m.unit if m else "", m.window if m else "", f.staff_id, m.name if m else "",
                    f.device, Word(f"method_{f.method}"), Word(f"clocking_{f.pattern}"), f.detail, Word(review),
                ),
                flag=f.verdict == "proxy",
            )
        )  # fmt: skip
    return Table("clocking", period, _COLUMNS, tuple(rows), site_name)
