"""The staff roster: who works at which hall, window and AB post, from when to when.

The window management section keeps it as a spreadsheet (台账, WZ 002:6); ``read_roster`` takes that file as
CSV or XLSX with Chinese or English headers, and ``import_roster`` stores it, one audited entry per person
added or changed. Nobody is deleted: a person leaves with an end date (离职日期), so past months still
report them. Names stay in the centre; terminals only ever see the pseudonymous staff id.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import staff
from protocol.topics import SEGMENT_RE

POSTS = ("A", "B", "")

# Field -> accepted headers (compared without spaces, case-insensitively).
HEADERS: dict[str, tuple[str, ...]] = {
    "site": ("站点", "site"),
    "staff_id": ("工号", "staff_id"),
    "name": ("姓名", "name"),
    "unit": ("单位", "unit"),
    "window": ("窗口", "window"),
    "post": ("AB岗", "post"),
    "start_date": ("入职日期", "start_date"),
    "end_date": ("离职日期", "end_date"),
}
REQUIRED = ("site", "staff_id", "start_date")
_DATE = re.compile(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?")


@dataclass(frozen=True, slots=True)
class StaffMember:
    site: str
    staff_id: str
    name: str
    unit: str
    window: str
    post: str  # "A", "B" or "" (no AB post)
    start_date: date
    end_date: date | None = None  # last day at the hall

    def employed_on(self, day: date) -> bool:
        return self.start_date <= day and (self.end_date is None or day <= self.end_date)


class RosterError(ValueError):
    """A roster file that cannot be imported; the message names the file, the row and the column."""


# -- reading the file ----------------------------------------------------------------------------------
def read_roster(path: Path) -> list[StaffMember]:
    """Every person in the file, checked: a bad cell raises RosterError naming row and column."""
    rows = xlsx_rows(path) if path.suffix.lower() in (".xlsx", ".xlsm") else csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise RosterError(f"{path.name}: 文件为空, 第 1 行应为表头 ({'、'.join(h[0] for h in HEADERS.values())})")
    columns = _columns(path, header)
    members: list[StaffMember] = []
    seen: dict[tuple[str, str], int] = {}
    for number, row in enumerate(rows, start=2):
        if all(cell_text(v) == "" for v in row):
            continue
        member = _member(path, number, row, columns)
        first = seen.setdefault((member.site, member.staff_id), number)
        if first != number:
            raise RosterError(
                f"{path.name} 第 {number} 行: 工号 {member.staff_id} 在 {member.site} 与第 {first} 行重复"
            )
        members.append(member)
    return members


def csv_rows(path: Path) -> Iterator[list[Any]]:
    # utf-8-sig reads both plain UTF-8 and Excel's "CSV UTF-8" (with a BOM).
    with path.open(encoding="utf-8-sig", newline="") as f:
        yield from csv.reader(f)


def xlsx_rows(path: Path) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = wb.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield list(values)
    finally:
        wb.close()


def _columns(path: Path, header: list[Any]) -> dict[str, tuple[int, str]]:
    """Field -> (column index, header as written in the file)."""
    wanted = {alias.lower(): name for name, aliases in HEADERS.items() for alias in aliases}
    columns: dict[str, tuple[int, str]] = {}
    for i, cell in enumerate(header):
        text = cell_text(cell)
        name = wanted.get(re.sub(r"\s+", "", text).lower())
        if name is not None and name not in columns:
            columns[name] = (i, text)
    missing = [HEADERS[name][0] for name in REQUIRED if name not in columns]
    if missing:
        raise RosterError(f"{path.name} 第 1 行: 缺少列 {'、'.join(missing)}")
    return columns


def _member(path: Path, number: int, row: list[Any], columns: dict[str, tuple[int, str]]) -> StaffMember:
    def cell(name: str) -> tuple[Any, str]:
        index, header = columns.get(name, (-1, HEADERS[name][0]))
        return (row[index] if 0 <= index < len(row) else None), header

    def fail(header: str, value: Any, problem: str) -> RosterError:
        return RosterError(f"{path.name} 第 {number} 行, {header}: {cell_text(value)!r} {problem}")

    values: dict[str, Any] = {}
    for name in ("site", "staff_id"):
        value, header = cell(name)
        text = cell_text(value)
        if not SEGMENT_RE.fullmatch(text):
            raise fail(header, value, "为空" if not text else "不是有效标识 (1-64 位字母、数字、'_' 或 '-')")
        values[name] = text
    for name, limit in (("name", 64), ("unit", 128), ("window", 64)):
        value, header = cell(name)
        if len(cell_text(value)) > limit:
            raise fail(header, value, f"超过 {limit} 个字符")
        values[name] = cell_text(value)
    value, header = cell("post")
    post = cell_text(value).upper().removesuffix("岗").removesuffix("角")
    if post not in POSTS:
        raise fail(header, value, "应为 A、B 或留空")
    values["post"] = post
    for name in ("start_date", "end_date"):
        value, header = cell(name)
        if cell_text(value) == "":
            if name == "start_date":
                raise fail(header, value, "为空, 应为日期 (YYYY-MM-DD)")
            values[name] = None
            continue
        parsed = cell_date(value)
        if parsed is None:
            raise fail(header, value, "不是日期 (应为 YYYY-MM-DD)")
        values[name] = parsed
    if values["end_date"] is not None and values["end_date"] < values["start_date"]:
        raise fail(cell("end_date")[1], values["end_date"], f"早于入职日期 {values['start_date']}")
    return StaffMember(**values)


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a staff id typed as a number comes out of Excel as 1001.0
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def cell_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    m = _DATE.fullmatch(cell_text(value))
    if m is None:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


# -- the store -----------------------------------------------------------------------------------------
async def import_roster(store: Store, members: list[StaffMember], *, by: str, at: datetime) -> tuple[int, int]:
    """Add new people and update changed ones; unchanged people and people missing from the file are left
    as they are (a person leaves by an end date, never by deletion). Returns (added, updated)."""
    added = updated = 0
    async with store.engine.begin() as conn:
        existing = {(m.site, m.staff_id): m for m in await _all(conn, {m.site for m in members})}
        for m in members:
            old = existing.get((m.site, m.staff_id))
            if old == m:
                continue
            values = {k: v for k, v in asdict(m).items() if k not in ("site", "staff_id")}
            if old is None:
                await conn.execute(staff.insert().values(site=m.site, staff_id=m.staff_id, updated_at=at, **values))
                added += 1
            else:
                s = staff.c
                await conn.execute(
                    staff.update().where(s.site == m.site, s.staff_id == m.staff_id).values(updated_at=at, **values)
                )
                updated += 1
            await audit(conn, at=at, actor=by, action="staff.add" if old is None else "staff.update",
                        target=f"{m.site}/{m.staff_id}", detail=_changes(old, m))  # fmt: skip
    return added, updated


def _changes(old: StaffMember | None, new: StaffMember) -> dict[str, Any]:
    """What the audit entry keeps: the fields that changed, with new values (a name only as changed)."""
    before = asdict(old) if old is not None else {}
    out: dict[str, Any] = {}
    for key, value in asdict(new).items():
        if key in ("site", "staff_id") or (key in before and before[key] == value):
            continue
        out[key] = "(changed)" if key == "name" else value
    return out


async def _all(conn: AsyncConnection, sites: set[str]) -> list[StaffMember]:
    rows = (await conn.execute(sa.select(staff).where(staff.c.site.in_(sorted(sites))))).all()
    return [_from_row(r) for r in rows]


async def roster(conn: AsyncConnection, site: str, first: date, last: date) -> list[StaffMember]:
    """The site's staff employed on at least one day of [first, last], by staff id."""
    s = staff.c
    q = (
        sa.select(staff)
        .where(s.site == site, s.start_date <= last, sa.or_(s.end_date.is_(None), s.end_date >= first))
        .order_by(s.staff_id)
    )
    return [_from_row(r) for r in (await conn.execute(q)).all()]


async def staff_member(conn: AsyncConnection, site: str, staff_id: str) -> StaffMember | None:
    s = staff.c
    row = (await conn.execute(sa.select(staff).where(s.site == site, s.staff_id == staff_id))).first()
    return None if row is None else _from_row(row)


def _from_row(r: Any) -> StaffMember:
    return StaffMember(r.site, r.staff_id, r.name, r.unit, r.window, r.post, r.start_date, r.end_date)
