"""The SLA report as files people open: CSV (UTF-8 with a BOM, so Excel reads the Chinese) and XLSX, both from
the one sheet writer (broker/reports/sheets.py), so they read the same: durations in minutes, percentages with
two decimals, times on the site's wall clock.

The figures add up as shown: the device sheet ends in a total row, and the summary's counted and down minutes are
that row, the sums of the rounded device figures, with the weighted availability computed from them. A reader
adding up the column with a calculator gets the total printed under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from broker.reports.labels import Labels, labels
from broker.reports.model import DeviceRow, IncidentRow, SlaReport
from broker.reports.sheets import Col, Fmt, Sheet, Value, heads_footer, shown, with_heads, write_workbook
from broker.reports.sheets import write_csv as write_sheets_csv

LOW_AVAILABILITY_PCT = 99.0  # rows under this are highlighted in the workbook
_MIN = Col("", "minutes")
_DEVICE_KEYS: tuple[str, ...] = ("device", "class", "hours24", "counted", "down", "availability", "incidents")
_DEVICE_KEYS += ("breaches", "mttr", "max_ttr", "self_healed", "remote", "on_site", "dispatches", "dispatches_late")
_FMT: dict[str, Fmt] = {
    "counted": "minutes",
    "down": "minutes",
    "mttr": "minutes",
    "max_ttr": "minutes",
    "availability": "pct",
}
_TEXT = ("device", "class", "hours24")


@dataclass(frozen=True, slots=True)
class Shown:
    """The site's totals as the device sheet shows them: sums of the rounded rows."""

    counted_min: float
    down_min: float
    availability_pct: float | None
    counts: dict[str, int]


def write_csv(report: SlaReport, path: Path, lang: str = "zh-CN") -> None:
    """Two sections, devices then incidents, each a title line and a header row."""
    w = labels(lang)
    footer = heads_footer(report.heads, lang)
    write_sheets_csv(path, [device_sheet(report, w), incident_sheet(report, w)], _zone(report), footer)


def write_xlsx(report: SlaReport, path: Path, lang: str = "zh-CN") -> None:
    w = labels(lang)
    sheets = [device_sheet(report, w), incident_sheet(report, w), summary_sheet(report, w, lang)]
    write_workbook(path, sheets, _zone(report))


# -- devices -------------------------------------------------------------------------------------------
def shown_totals(report: SlaReport) -> Shown:
    counted = round(sum(_minutes(d.counted_s) for d in report.devices), 1)
    down = round(sum(_minutes(d.down_s) for d in report.devices), 1)
    keys = ("incidents", "breaches", "self_healed", "remote", "on_site", "dispatches", "dispatches_late")
    counts = {k: sum(getattr(d, k) for d in report.devices) for k in keys}
    return Shown(counted, down, 100.0 * (1.0 - down / counted) if counted > 0 else None, counts)


def _minutes(seconds: float) -> float:
    value = shown(seconds, _MIN)
    assert isinstance(value, float | int)
    return float(value)


def device_sheet(report: SlaReport, w: Labels) -> Sheet:
    refills = sorted({k for d in report.devices for k in d.refills})
    counters = sorted({k for d in report.devices for k in d.usage})
    cols = [Col(w[k], "text" if k in _TEXT else _FMT.get(k, "int")) for k in _DEVICE_KEYS]
    cols += [Col(w["refills"].format(w.consumable(k)), "int") for k in refills]
    cols += [Col(w["usage"].format(w.counter(k)), "int") for k in counters]
    rows = [_device_cells(d, w) + _counts(d.refills, refills) + _counts(d.usage, counters) for d in report.devices]
    low = {i for i, d in enumerate(report.devices) if _is_low(d.availability_pct)}
    rows.append(_total_cells(report, w, refills, counters))
    return Sheet(
        w["sheet_devices"],
        w.title(report, "sheet_devices"),
        tuple(cols),
        tuple(tuple(r) for r in rows),
        flagged=frozenset(low),
        bold=frozenset({len(rows) - 1}),
    )


def _device_cells(d: DeviceRow, w: Labels) -> list[Value]:
    return [
        d.device,
        w.classes.get(d.device_class, d.device_class),
        w.yes_no(d.hours24),
        d.counted_s,
        d.down_s,
        d.availability_pct,
        d.incidents,
        d.breaches,
        d.mttr_s,
        d.max_ttr_s,
        d.self_healed,
        d.remote,
        d.on_site,
        d.dispatches,
        d.dispatches_late,
    ]


def _total_cells(report: SlaReport, w: Labels, refills: list[str], counters: list[str]) -> list[Value]:
    t = shown_totals(report)
    c = t.counts
    head: list[Value] = [w["total"], "", "", t.counted_min * 60, t.down_min * 60, t.availability_pct]
    head += [c["incidents"], c["breaches"], None, None, c["self_healed"], c["remote"], c["on_site"]]
    head += [c["dispatches"], c["dispatches_late"]]
    head += [sum(d.refills.get(k, 0) for d in report.devices) for k in refills]
    return head + [sum(d.usage.get(k, 0) for d in report.devices) for k in counters]


def _counts(values: dict[str, int], keys: list[str]) -> list[Value]:
    return [values.get(k, 0) for k in keys]


def _is_low(value: Value) -> bool:
    return isinstance(value, float) and value < LOW_AVAILABILITY_PCT


# -- incidents -----------------------------------------------------------------------------------------
def incident_sheet(report: SlaReport, w: Labels) -> Sheet:
    keys = ["id", "device", "kind", "severity", "counted_in_sla", "detected_at", "staff_reported_at", "cleared_at"]
    keys += ["closed_at", "ttr", "breached", "breach_reason", "recovery"]
    times = ("detected_at", "staff_reported_at", "cleared_at", "closed_at")
    fmts: dict[str, Fmt] = {"ttr": "minutes", **{k: "time" for k in times}}
    cols = tuple(Col(w[k], fmts.get(k, "text")) for k in keys)
    rows = tuple(_incident_cells(report, r, w) for r in report.incidents)
    return Sheet(w["sheet_incidents"], w.title(report, "sheet_incidents"), cols, rows)


def _incident_cells(report: SlaReport, r: IncidentRow, w: Labels) -> tuple[Value, ...]:
    return (
        r.id,
        w.device(r.device),
        w.kind(r.kind),
        w.severity.get(r.severity, r.severity),
        w.counted(r.outage and report.counts_in_month(r), r.in_hall_outage, r.device == "*"),
        r.detected_at,
        r.staff_reported_at,
        r.cleared_at,
        r.closed_at,
        r.ttr_s,
        w.yes_no(r.breached),
        r.breach_reason,
        w.recovery.get(r.recovery, r.recovery),
    )


# -- summary -------------------------------------------------------------------------------------------
def summary_sheet(report: SlaReport, w: Labels, lang: str = "zh-CN") -> Sheet:
    t, shown_ = report.totals(), shown_totals(report)
    items: list[tuple[str, Value, Col]] = [
        ("site", report.site_name, Col("")),
        ("site_id", report.site, Col("")),
        ("month", report.month, Col("")),
        ("devices", t.devices, Col("", "int")),
        ("counted", shown_.counted_min * 60, _MIN),
        ("down", shown_.down_min * 60, _MIN),
        ("availability_weighted", shown_.availability_pct, Col("", "pct")),
        ("incidents", t.incidents, Col("", "int")),
        ("breaches", t.breaches, Col("", "int")),
        ("compliance", t.compliance_pct, Col("", "pct")),
        ("dispatches", t.dispatches, Col("", "int")),
        ("dispatches_late", t.dispatches_late, Col("", "int")),
        ("generated_at", report.generated_at, Col("", "time")),
    ]
    rows = tuple((w[k], v) for k, v, _ in items)
    row_cols = tuple((Col(w["item"]), col) for _, _, col in items)
    low = frozenset(i for i, (k, v, _) in enumerate(items) if k == "availability_weighted" and _is_low(v))
    cols = (Col(w["item"]), Col(w["value"]))
    sheet = Sheet(w["sheet_summary"], w.title(report, "sheet_summary"), cols, rows, flagged=low, row_cols=row_cols)
    return with_heads(sheet, report.heads, lang)


def _zone(report: SlaReport) -> tzinfo:
    zone = report.start.tzinfo
    assert zone is not None, "the report's month bounds are aware"
    return zone
