"""Charts drawn on the server as inline SVG: no chart library, nothing for the browser to fetch or run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from runtime.clock import HALL_ZONE

COLOURS = {"online": "#2e9d48", "stale": "#e0a030", "offline": "#d0342c", "shutdown": "#7a7a7a", "unknown": "#c8c8c8"}
COLOURS["registered"] = "#8aa4c8"  # provisioned, never heard from


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime
    end: datetime
    state: str


def segments(before: str, changes: list[Any], t0: datetime, t1: datetime) -> list[Segment]:
    """Presence history rows (``at``, ``state``) as segments covering ``[t0, t1]``."""
    out: list[Segment] = []
    state, start = before, t0
    for ch in changes:
        at = min(max(ch.at, t0), t1)
        if at > start:
            out.append(Segment(start, at, state))
        state, start = ch.state, at
    if t1 > start:
        out.append(Segment(start, t1, state))
    return out


def availability(segs: list[Segment]) -> float | None:
    """Share of the time online, among the time whose state is known."""
    known = sum((s.end - s.start).total_seconds() for s in segs if s.state != "unknown")
    if known <= 0:
        return None
    online = sum((s.end - s.start).total_seconds() for s in segs if s.state == "online")
    return online / known


def timeline_svg(segs: list[Segment], t0: datetime, t1: datetime, labels: dict[str, str], width: int = 240) -> str:
    """One bar: a rectangle per segment coloured by presence, with a tooltip naming state and times."""
    total = (t1 - t0).total_seconds() or 1.0
    parts = [
        f'<svg class="timeline" role="img" width="{width}" height="14" viewBox="0 0 {width} 14"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{escape(labels.get("timeline", ""))}</title>'
    ]
    for s in segs:
        x = (s.start - t0).total_seconds() / total * width
        w = max((s.end - s.start).total_seconds() / total * width, 0.5)
        tip = f"{labels.get(s.state, s.state)} {s.start:%m-%d %H:%M} - {s.end:%m-%d %H:%M}"
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="14" fill="{COLOURS.get(s.state, "#999")}"'
            f' data-state="{escape(s.state)}"><title>{escape(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def level_svg(pct: float | None, width: int = 120) -> str:
    """A consumable's level as a bar (grey and empty when the device cannot measure it)."""
    if pct is None:
        return f'<svg width="{width}" height="10" role="img"><rect width="{width}" height="10" fill="#ddd"/></svg>'
    fill = "#d0342c" if pct <= 15 else "#e0a030" if pct <= 40 else "#2e9d48"
    w = max(0.0, min(pct, 100.0)) / 100 * width
    return (
        f'<svg width="{width}" height="10" role="img"><title>{pct:.0f}%</title>'
        f'<rect width="{width}" height="10" fill="#eee"/><rect width="{w:.1f}" height="10" fill="{fill}"/></svg>'
    )


# -- a consumable's level and its forecast -------------------------------------------------------------------
def level_chart_svg(
    points: list[tuple[datetime, float]],
    now: datetime,
    empty_at: datetime | None,
    labels: dict[str, str],
    title: str = "",
    width: int = 360,
    height: int = 140,
) -> str:
    """Levels reported (solid line) and, when the rules forecast it, the straight run down to empty at the
    forecast time (dashed); a vertical line marks now. Time runs left to right, 0-100 % bottom to top."""
    left, right, top, bottom = 34, 10, 30, 20
    t0 = min([p[0] for p in points] or [now - timedelta(hours=24)])
    t1 = max(now, empty_at or now)
    span = (t1 - t0).total_seconds() or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: datetime) -> float:
        return left + (t - t0).total_seconds() / span * plot_w

    def y(pct: float) -> float:
        return top + (1 - max(0.0, min(pct, 100.0)) / 100) * plot_h

    parts = [
        f'<svg class="chart level-chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' xmlns="http://www.w3.org/2000/svg" data-points="{len(points)}"><title>{escape(title)}</title>',
        f'<text x="{left}" y="12" font-size="11">{escape(title)}</text>',
    ]
    for pct in (0, 50, 100):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(pct):.1f}" y2="{y(pct):.1f}" stroke="#e2e4e8"/>'
            f'<text x="{left - 4}" y="{y(pct) + 4:.1f}" font-size="10" text-anchor="end">{pct}%</text>'
        )
    if points:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline class="history" points="{line}" fill="none" stroke="#1f3b64" stroke-width="1.5"/>')
    if empty_at is not None and points:
        t, v = points[-1]
        tip = f"{labels.get('forecast', '')} {empty_at.astimezone(HALL_ZONE):%m-%d %H:%M}"
        parts.append(
            f'<line class="forecast" x1="{x(t):.1f}" y1="{y(v):.1f}" x2="{x(empty_at):.1f}" y2="{y(0):.1f}"'
            f' stroke="#d0342c" stroke-width="1.5" stroke-dasharray="4 3"><title>{escape(tip)}</title></line>'
            f'<text class="forecast-label" x="{min(x(empty_at), width - right):.1f}" y="{height - 6}"'
            f' font-size="10" text-anchor="end" fill="#b01c16">{escape(tip)}</text>'
        )
    parts.append(
        f'<line class="now" x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#888"'
        f' stroke-dasharray="2 2"/><text x="{x(now):.1f}" y="{top - 3}" font-size="10" text-anchor="middle">'
        f"{escape(labels.get('now', ''))}</text>"
    )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="10">{t0.astimezone(HALL_ZONE):%m-%d %H:%M}</text></svg>'
    )
    return "".join(parts)


# -- a month's attendance per unit -------------------------------------------------------------------------
ATTENDANCE_KINDS = (
    ("normal", "#2e9d48"),
    ("late", "#e0a030"),
    ("early", "#c46a00"),
    ("missing", "#9a6fb0"),
    ("absent", "#d0342c"),
    ("device_fault", "#4a7fc0"),
    ("provisional", "#b8c4d6"),  # 在岗 / 未到岗 / 待签退: today, not judged yet (never red)
)


def stacked_bars_svg(
    bars: list[tuple[str, dict[str, int]]], labels: dict[str, str], title: str = "", bar_w: int = 46, height: int = 220
) -> str:
    """One column per unit, stacked by kind (normal, late, early, missing punch, absent,
    device fault: staff-days), with a
    legend; each piece names its unit, kind and count in a tooltip and in data- attributes."""
    left, top, bottom, gap = 40, 50, 30, 18
    width = max(left + len(bars) * (bar_w + gap) + gap, 360)
    plot_h = height - top - bottom
    biggest = max([sum(c.values()) for _, c in bars] or [0]) or 1
    parts = [
        f'<svg class="chart attendance-chart" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text x="{left}" y="12" font-size="12">{escape(title)} ({escape(labels.get("staff_days", ""))})</text>',
    ]
    lx = left
    for kind, colour in ATTENDANCE_KINDS:
        name = escape(labels.get(kind, kind))
        parts.append(
            f'<rect x="{lx}" y="18" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{lx + 13}" y="27" font-size="10">{name}</text>'
        )
        lx += 13 + 11 * len(labels.get(kind, kind)) + 10
    parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>')
    parts.append(f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{biggest}</text>')
    for i, (unit, counts) in enumerate(bars):
        x = left + gap + i * (bar_w + gap)
        base = float(top + plot_h)
        for kind, colour in ATTENDANCE_KINDS:
            n = counts.get(kind, 0)
            if n <= 0:
                continue
            h = n / biggest * plot_h
            base -= h
            tip = f"{unit} {labels.get(kind, kind)}: {n}"
            parts.append(
                f'<rect class="bar" x="{x}" y="{base:.1f}" width="{bar_w}" height="{h:.1f}" fill="{colour}"'
                f' data-unit="{escape(unit)}" data-kind="{kind}" data-count="{n}"><title>{escape(tip)}</title></rect>'
            )
        total = sum(counts.values())
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{base - 3:.1f}" font-size="10" text-anchor="middle">{total}</text>'
            f'<text class="unit" x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" font-size="11"'
            f' text-anchor="middle">{escape(unit[:8])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
