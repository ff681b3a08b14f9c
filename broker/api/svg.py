"""Charts drawn on the server as inline SVG: no chart library, nothing for the browser to fetch or run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

COLOURS = {"online": "#2e9d48", "stale": "#e0a030", "offline": "#d0342c", "shutdown": "#7a7a7a", "unknown": "#c8c8c8"}


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
