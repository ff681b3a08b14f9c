"""A device's health over time as inline SVG, drawn on the server like broker/api/svg.py's charts.

The rule: the chart draws what the device reported and nothing else. A gap with no reports stays a gap (the
line breaks where two reports are more than ``gap_factor`` heartbeats apart), and a device that reports no
value for a measure (no temperature sensor) gets no chart for it, never a flat line at zero.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

from runtime.clock import HALL_ZONE

Point = tuple[datetime, float]


def series_svg(
    points: list[Point],
    t0: datetime,
    t1: datetime,
    title: str,
    unit: str,
    *,
    gap: timedelta = timedelta(minutes=5),
    fixed_max: float | None = None,
    width: int = 360,
    height: int = 120,
) -> str:
    """One measure over [t0, t1]: a polyline per run of reports, the y axis from 0 to the largest value (or
    ``fixed_max``, 100 for percentages), the latest value in the title."""
    left, right, top, bottom = 40, 10, 22, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    span = (t1 - t0).total_seconds() or 1.0
    top_value = fixed_max if fixed_max is not None else max([v for _, v in points] + [1.0]) * 1.1

    def x(t: datetime) -> float:
        return left + max(0.0, min((t - t0).total_seconds() / span, 1.0)) * plot_w

    def y(v: float) -> float:
        return top + (1 - max(0.0, min(v / top_value, 1.0))) * plot_h

    latest = f" {points[-1][1]:.1f}{unit}" if points else ""
    head = f"{title}{latest}"
    parts = [
        f'<svg class="chart health-chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' xmlns="http://www.w3.org/2000/svg" data-points="{len(points)}"><title>{escape(head)}</title>',
        f'<text x="{left}" y="13" font-size="11">{escape(head)}</text>',
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#bbb"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{top_value:.0f}{escape(unit)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>',
    ]
    for run in _runs(points, gap):
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
        if len(run) == 1:
            parts.append(f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="1.5" fill="#1f3b64"/>')
        else:
            parts.append(f'<polyline points="{line}" fill="none" stroke="#1f3b64" stroke-width="1.3"/>')
    parts.append(
        f'<text x="{left}" y="{height - 4}" font-size="10">{t0.astimezone(HALL_ZONE):%m-%d %H:%M}</text>'
        f'<text x="{width - right}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"{t1.astimezone(HALL_ZONE):%m-%d %H:%M}</text></svg>"
    )
    return "".join(parts)


def _runs(points: list[Point], gap: timedelta) -> list[list[Point]]:
    runs: list[list[Point]] = []
    for p in points:
        if runs and p[0] - runs[-1][-1][0] <= gap:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
