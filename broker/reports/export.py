"""The SLA report as files people open: CSV (UTF-8 with a BOM, so Excel reads the Chinese) and XLSX.

Both are drawn from the same tables of typed cells; CSV formats each cell as text (times "YYYY-MM-DD HH:MM" in
the site zone, durations in minutes with one decimal, percentages with two), XLSX keeps numbers and times as
numbers with a display format, so the hall can sort and sum them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Literal

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from broker.reports.labels import Labels, labels
from broker.reports.model import DeviceRow, IncidentRow, SlaReport

LOW_AVAILABILITY_PCT = 99.0  # rows under this are highlighted in the workbook
LOW_FILL = PatternFill("solid", start_color="FFC7CE", end_color="FFC7CE")
HEADER_FILL = PatternFill("solid", start_color="DDEBF7", end_color="DDEBF7")
_MAX_WIDTH = 50

Value = str | int | float | datetime | None
Fmt = Literal["text", "int", "min", "pct", "time"]
Cell = tuple[Value, Fmt]
_EXCEL_FORMAT: dict[Fmt, str] = {"int": "0", "min": "0.0", "pct": "0.00", "time": "yyyy-mm-dd hh:mm"}


@dataclass(frozen=True, slots=True)
class Table:
    sheet: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    low: list[bool]  # per row: availability under LOW_AVAILABILITY_PCT


def write_csv(report: SlaReport, path: Path, lang: str = "zh-CN") -> None:
    """Two sections, devices then incidents, each a title line and a header row."""
    words = labels(lang)
    zone = _zone(report)
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        out = csv.writer(f)
        for i, table in enumerate((device_table(report, words), incident_table(report, words))):
            if i:
                out.writerow([])
            out.writerow([table.title])
            out.writerow(table.headers)
            out.writerows([_text(v, fmt, zone) for v, fmt in row] for row in table.rows)


def write_xlsx(report: SlaReport, path: Path, lang: str = "zh-CN") -> None:
    words = labels(lang)
    book = Workbook()
    book.remove(book.active)
    for table in (device_table(report, words), incident_table(report, words), summary_table(report, words)):
        _sheet(book, table, _zone(report))
    book.save(path)


# -- tables --------------------------------------------------------------------------------------------
def device_table(report: SlaReport, w: Labels) -> Table:
    refills = sorted({k for d in report.devices for k in d.refills})
    counters = sorted({k for d in report.devices for k in d.usage})
    keys = ["device", "class", "hours24", "counted", "down", "availability", "incidents", "breaches", "mttr"]
    keys += ["max_ttr", "self_healed", "remote", "on_site", "dispatches", "dispatches_late"]
    headers = [w[k] for k in keys]
    headers += [w["refills"].format(w.consumable(k)) for k in refills]
    headers += [w["usage"].format(w.counter(k)) for k in counters]
    rows = [_device_cells(d, w) + _counts(d.refills, refills) + _counts(d.usage, counters) for d in report.devices]
    low = [d.availability_pct is not None and d.availability_pct < LOW_AVAILABILITY_PCT for d in report.devices]
    return Table(w["sheet_devices"], w.title(report, "sheet_devices"), headers, rows, low)


def _device_cells(d: DeviceRow, w: Labels) -> list[Cell]:
    return [
        (d.device, "text"),
        (w.classes.get(d.device_class, d.device_class), "text"),
        (w.yes_no(d.hours24), "text"),
        (d.counted_s, "min"),
        (d.down_s, "min"),
        (d.availability_pct, "pct"),
        (d.incidents, "int"),
        (d.breaches, "int"),
        (d.mttr_s, "min"),
        (d.max_ttr_s, "min"),
        (d.self_healed, "int"),
        (d.remote, "int"),
        (d.on_site, "int"),
        (d.dispatches, "int"),
        (d.dispatches_late, "int"),
    ]


def _counts(values: dict[str, int], keys: list[str]) -> list[Cell]:
    return [(values.get(k, 0), "int") for k in keys]


def incident_table(report: SlaReport, w: Labels) -> Table:
    keys = ["id", "device", "kind", "severity", "detected_at", "staff_reported_at", "cleared_at", "closed_at"]
    keys += ["ttr", "breached", "breach_reason", "recovery"]
    rows = [_incident_cells(r, w) for r in report.incidents]
    return Table(
        w["sheet_incidents"], w.title(report, "sheet_incidents"), [w[k] for k in keys], rows, [False] * len(rows)
    )


def _incident_cells(r: IncidentRow, w: Labels) -> list[Cell]:
    return [
        (r.id, "text"),
        (w.device(r.device), "text"),
        (w.kind(r.kind), "text"),
        (w.severity.get(r.severity, r.severity), "text"),
        (r.detected_at, "time"),
        (r.staff_reported_at, "time"),
        (r.cleared_at, "time"),
        (r.closed_at, "time"),
        (r.ttr_s, "min"),
        (w.yes_no(r.breached), "text"),
        (r.breach_reason, "text"),
        (w.recovery.get(r.recovery, r.recovery), "text"),
    ]


def summary_table(report: SlaReport, w: Labels) -> Table:
    t = report.totals()
    items: list[tuple[str, Cell]] = [
        ("site", (report.site_name, "text")),
        ("site_id", (report.site, "text")),
        ("month", (report.month, "text")),
        ("devices", (t.devices, "int")),
        ("counted", (t.counted_s, "min")),
        ("down", (t.down_s, "min")),
        ("availability_weighted", (t.availability_pct, "pct")),
        ("incidents", (t.incidents, "int")),
        ("breaches", (t.breaches, "int")),
        ("compliance", (t.compliance_pct, "pct")),
        ("dispatches", (t.dispatches, "int")),
        ("dispatches_late", (t.dispatches_late, "int")),
        ("generated_at", (report.generated_at, "time")),
    ]
    rows: list[list[Cell]] = [[(w[k], "text"), cell] for k, cell in items]
    low = [k == "availability_weighted" and _is_low(cell[0]) for k, cell in items]
    return Table(w["sheet_summary"], w.title(report, "sheet_summary"), [w["item"], w["value"]], rows, low)


def _is_low(value: Value) -> bool:
    return isinstance(value, float) and value < LOW_AVAILABILITY_PCT


# -- cells ---------------------------------------------------------------------------------------------
def _text(value: Value, fmt: Fmt, zone: tzinfo) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if fmt == "min" and isinstance(value, int | float):
        return f"{value / 60:.1f}"
    if fmt == "pct" and isinstance(value, int | float):
        return f"{value:.2f}"
    return str(value)


def _excel(value: Value, fmt: Fmt, zone: tzinfo) -> Value:
    if isinstance(value, datetime):  # Excel has no time zones: the site's wall clock, as the hall reads it
        return value.astimezone(zone).replace(tzinfo=None)
    if fmt == "min" and isinstance(value, int | float):
        return value / 60
    return value


def _sheet(book: Workbook, table: Table, zone: tzinfo) -> Worksheet:
    ws = book.create_sheet(table.sheet)
    ws.append([table.title])
    ws.cell(1, 1).font = Font(bold=True, size=14)
    ws.append(table.headers)
    for cell in ws[2]:
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
    for r, (row, low) in enumerate(zip(table.rows, table.low, strict=True), start=3):
        ws.append([_excel(v, fmt, zone) for v, fmt in row])
        # ws.cell(r, c), not ws[ws.max_row]: max_row recounts every cell, quadratic in the rows.
        for c, (_, fmt) in enumerate(row, start=1):
            cell = ws.cell(r, c)
            if fmt in _EXCEL_FORMAT:
                cell.number_format = _EXCEL_FORMAT[fmt]
            if low:
                cell.fill = LOW_FILL
    ws.freeze_panes = "A3"
    _widths(ws, table, zone)
    return ws


def _widths(ws: Worksheet, table: Table, zone: tzinfo) -> None:
    for i, header in enumerate(table.headers):
        texts = [header] + [_text(*row[i], zone) for row in table.rows]
        ws.column_dimensions[get_column_letter(i + 1)].width = min(max(map(_display_width, texts)) + 2, _MAX_WIDTH)


def _display_width(text: str) -> int:
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)  # CJK characters take two columns


def _zone(report: SlaReport) -> tzinfo:
    zone = report.start.tzinfo
    assert zone is not None, "the report's month bounds are aware"
    return zone
