"""The one sheet writer of every workbook hallfleet files (the SLA report, the attendance bulletins, the 好差评
report): a title row, a bold frozen header, numbers kept as numbers, column widths that fit the Chinese.

The rule it keeps: **a cell holds what it shows.** Each number is rounded to the precision its column shows
before it is written, and the column's precision is the finest its data needs (a 0.25-day penalty shows 0.25,
never 0.3; whole numbers show no decimals), up to a cap. Totals built from ``shown()`` values therefore add
up, on the sheet and across sheets, to the figures a person reads. Durations are minutes, times are the site's
wall clock (Excel has no time zones).

A second rule: **text is never a formula.** Strings come from devices (a queue window's name, a rating pad's
staff id) and people; one that starts with ``=`` would be a live formula in the workbook (openpyxl writes it as
one), ``=HYPERLINK(...)`` a link that leaks what the clicker's Excel sends. Text cells are written as text,
and in a CSV a text starting with ``= + - @``, a tab or a carriage return gets a leading ``'`` (OWASP's advice).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

if TYPE_CHECKING:
    from broker.audit.heads import MonthHeads

Fmt = Literal["text", "int", "decimal", "minutes", "pct", "date", "time"]
Value = str | int | float | date | datetime | None

FLAG_FILL = PatternFill("solid", start_color="FFC7CE", end_color="FFC7CE")  # something to act on
HEADER_FILL = PatternFill("solid", start_color="DDEBF7", end_color="DDEBF7")
MAX_DECIMALS = 2  # "decimal" columns: quarter days need two; finer data is rounded to this
PCT_DECIMALS = 2  # percentages unless a column says otherwise (99.95 % is not 100 %)
MINUTE_DECIMALS = 1  # durations: minutes with one decimal (6 s), enough for an SLA of 30 minutes
_MAX_WIDTH = 60
_BOLD = Font(bold=True)
_TITLE = Font(bold=True, size=14)


@dataclass(frozen=True, slots=True)
class Col:
    """A column: its header, how its values read, and (for decimal and pct) a fixed number of decimals."""

    header: str
    fmt: Fmt = "text"
    decimals: int | None = None  # None: decimal columns fit their data, pct shows PCT_DECIMALS


@dataclass(frozen=True, slots=True)
class Sheet:
    name: str  # at most 31 characters (Excel's limit): longer names are cut
    title: str
    columns: tuple[Col, ...]
    rows: tuple[tuple[Value, ...], ...]
    flagged: frozenset[int] = field(default_factory=frozenset)  # row indexes highlighted
    bold: frozenset[int] = field(default_factory=frozenset)  # row indexes in bold (subtotals, totals)
    # An item/value sheet (a summary) formats each row its own way: row i's cells read as row_cols[i].
    row_cols: tuple[tuple[Col, ...], ...] = ()

    def layout(self) -> list[tuple[tuple[Col, ...], list[int]]]:
        """Each row's columns and decimals: the sheet's columns with one precision per column, or each row's own."""
        if self.row_cols:
            return [(cols, [decimals_of(c, [v]) for c, v in zip(cols, row, strict=True)])
                    for cols, row in zip(self.row_cols, self.rows, strict=True)]  # fmt: skip
        places = [decimals_of(c, (row[i] for row in self.rows)) for i, c in enumerate(self.columns)]
        return [(self.columns, places)] * len(self.rows)


def with_heads(sheet: Sheet, heads: MonthHeads | None, lang: str = "zh-CN") -> Sheet:
    """An item/value summary sheet with the month's chain heads as its last rows (broker/audit/heads.py): every
    monthly workbook prints them the same way, in the sheet a reviewer reads first. Rows wider than two cells
    (a summary with a target column) get blank cells after the head."""
    if heads is None:
        return sheet
    width = len(sheet.columns)
    added = tuple((label, value, *([None] * (width - 2))) for label, value in heads.items(lang))
    own = sheet.row_cols or tuple(sheet.columns for _ in sheet.rows)
    return replace(sheet, rows=sheet.rows + added, row_cols=own + tuple((Col(""),) * width for _ in added))


def heads_footer(heads: MonthHeads | None, lang: str = "zh-CN") -> list[list[str]]:
    """The CSV form of the same rows: lines after the last table (``write_csv``'s ``footer``)."""
    return heads.footer(lang) if heads is not None else []


def decimals_of(col: Col, values: Iterable[Value]) -> int:
    """How many decimals a column shows: fixed for ints, minutes and set ones, else the fewest that show every
    value of the column exactly, up to MAX_DECIMALS."""
    if col.fmt == "int":
        return 0
    if col.fmt == "minutes":
        return MINUTE_DECIMALS if col.decimals is None else col.decimals
    if col.decimals is not None:
        return col.decimals
    if col.fmt == "pct":
        return PCT_DECIMALS
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    for n in range(MAX_DECIMALS):
        if all(abs(round(v, n) - v) < 1e-9 for v in numbers):
            return n
    return MAX_DECIMALS


def shown(value: Value, col: Col, decimals: int | None = None) -> Value:
    """The value as the cell holds it: minutes from seconds, numbers rounded to what is shown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if col.fmt == "minutes":
        value = value / 60
    if col.fmt == "text":
        return value
    n = decimals_of(col, [value]) if decimals is None else decimals
    return round(value) if n == 0 else round(float(value), n)


def number_format(col: Col, decimals: int) -> str | None:
    if col.fmt in ("int", "decimal", "minutes", "pct"):
        return "0" if decimals == 0 else "0." + "0" * decimals
    return {"date": "yyyy-mm-dd", "time": "yyyy-mm-dd hh:mm"}.get(col.fmt)


def cell_text(value: Value, col: Col, decimals: int, zone: tzinfo | None = None) -> str:
    """What the cell shows, as text (CSV, widths)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _wall(value, zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool) and col.fmt != "text":
        return f"{shown(value, col, decimals):.{decimals}f}"
    return str(value)


def write_workbook(path: Path, sheets: Sequence[Sheet], zone: tzinfo | None = None) -> None:
    """One worksheet per sheet. ``zone``: the site's, for aware times; None keeps each time's own zone."""
    book = Workbook()
    book.remove(book.active)
    for sheet in sheets:
        _worksheet(book, sheet, zone)
    book.save(path)


def write_csv(
    path: Path, sheets: Sequence[Sheet], zone: tzinfo | None = None, footer: Sequence[Sequence[str]] = ()
) -> None:
    """Each sheet as a title line, a header and its rows, a blank line between sheets; UTF-8 with a BOM, so
    Excel reads the Chinese. Numbers read exactly as in the workbook. ``footer``: lines after a blank line (the
    month's chain heads, broker/audit/heads.py)."""
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        out = csv.writer(f)
        for i, sheet in enumerate(sheets):
            if i:
                out.writerow([])
            out.writerow([csv_text(sheet.title)])
            out.writerow([csv_text(c.header) for c in sheet.columns])
            for row, texts in zip(sheet.rows, sheet_texts(sheet, zone), strict=True):
                out.writerow([csv_text(t) if isinstance(v, str) else t for v, t in zip(row, texts, strict=True)])
        if footer:
            out.writerow([])
            out.writerows([[csv_text(t) for t in line] for line in footer])


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """Text a spreadsheet opening the CSV reads as text, never as a formula."""
    return "'" + text if len(text) > 1 and text.startswith(_FORMULA_START) else text


def sheet_texts(sheet: Sheet, zone: tzinfo | None = None) -> list[list[str]]:
    """Each row's cells as text, as the workbook shows them (the CSV's rows, a terminal's printout)."""
    return [
        [cell_text(v, c, n, zone) for v, c, n in zip(row, cols, places, strict=True)]
        for row, (cols, places) in zip(sheet.rows, sheet.layout(), strict=True)
    ]


def _wall(t: datetime, zone: tzinfo | None) -> datetime:
    """The wall clock a person in the hall reads, without a zone (Excel has none)."""
    if t.tzinfo is not None and zone is not None:
        t = t.astimezone(zone)
    return t.replace(tzinfo=None)


def _excel(value: Value, col: Col, decimals: int, zone: tzinfo | None) -> Value:
    if isinstance(value, datetime):
        return _wall(value, zone)
    return shown(value, col, decimals)


def _worksheet(book: Workbook, sheet: Sheet, zone: tzinfo | None) -> Worksheet:
    ws = book.create_sheet(sheet.name[:31])
    ws.append([sheet.title])
    ws.cell(1, 1).font = _TITLE
    _as_text(ws.cell(1, 1))
    ws.append([c.header for c in sheet.columns])
    for cell in ws[2]:
        cell.font = _BOLD
        cell.fill = HEADER_FILL
        _as_text(cell)
    for i, (row, (cols, places)) in enumerate(zip(sheet.rows, sheet.layout(), strict=True)):
        r = i + 3
        formats = [number_format(c, n) for c, n in zip(cols, places, strict=True)]
        ws.append([_excel(v, c, n, zone) for v, c, n in zip(row, cols, places, strict=True)])
        # ws.cell(r, c), never ws[ws.max_row]: max_row recounts every cell, quadratic in the rows (a 1,000-staff
        # bulletin took 15 s instead of 1).
        for j, fmt in enumerate(formats, start=1):
            cell = ws.cell(r, j)
            _as_text(cell)
            if fmt is not None:
                cell.number_format = fmt
            if i in sheet.bold:
                cell.font = _BOLD
            if i in sheet.flagged:
                cell.fill = FLAG_FILL
    ws.freeze_panes = "A3"
    _widths(ws, sheet, sheet_texts(sheet, zone))
    return ws


def _as_text(cell: Cell) -> None:
    # openpyxl makes any string starting with "=" a formula; ours are all data.
    if cell.data_type == "f":
        cell.data_type = "s"


def _widths(ws: Worksheet, sheet: Sheet, texts: list[list[str]]) -> None:
    for i, col in enumerate(sheet.columns):
        width = max([display_width(col.header), *(display_width(t[i]) for t in texts)]) + 2
        ws.column_dimensions[get_column_letter(i + 1)].width = min(width, _MAX_WIDTH)


def display_width(text: str) -> int:
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)  # CJK characters take two columns
