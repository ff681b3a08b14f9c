"""Consumables as the consumables page and the device page show them: every number from a device or labelled an
estimate.

- The state is the device's own word (thermal paper: ok / near end / end from the ESC/POS paper sensor; A4
  toner and trays: from IPP ``printer-supply`` and the trays), in the page's language.
- A level is shown only where the device measured one (IPP), marked as reported by the device.
- Receipts left on a near-end roll and every run-out time are the forecast's reckoning (broker/rules/
  consumables.py): shown with the word "estimate" and how it was reckoned, never as a measurement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.api.fleet_queries import latest_counter
from broker.api.svg import level_chart_svg, level_svg
from broker.api.views import hall_time
from broker.rules.consumables import THERMAL_PAPER, consumable_label, receipt_estimate
from broker.sites import Sites
from broker.store.db import Store


async def consumable_rows(
    store: Store, sites: Sites, rows: list[Any], lang: str, t: dict[str, str], now: datetime,
    history: dict[tuple[str, str], list[tuple[datetime, float]]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for r in rows:
        estimate = await _receipts(store, sites, r, t)
        out.append(_row(r, lang, t, now, (history or {}).get((r.key, r.consumable)), estimate))
    return out


async def _receipts(store: Store, sites: Sites, r: Any, t: dict[str, str]) -> str:
    """The near-end roll's receipts left, labelled as an estimate ("" where there is none)."""
    if r.consumable != THERMAL_PAPER or r.low_since is None:
        return ""
    site, _, device = r.key.partition("/")
    policy = sites[site].consumables
    found = receipt_estimate(r, await latest_counter(store, site, device, policy.usage_counter),
                             policy.receipts_after_near_end)  # fmt: skip
    if found is None:
        return ""
    return t["estimate_receipts"].format(left=found.left, after=found.after_near_end, used=found.printed_since_low)


def _row(
    r: Any, lang: str, t: dict[str, str], now: datetime, points: list[tuple[datetime, float]] | None, receipts: str
) -> dict[str, Any]:
    zh, en = consumable_label(r.consumable)
    name = en if lang == "en" else zh
    chart = ""
    if points:
        chart = level_chart_svg(points, now, r.empty_forecast, t, f"{r.key} {name}: {t['level_chart']}")
    measured = r.level_pct is not None
    return {
        "chart": chart,
        "key": r.key,
        "href": "/devices/" + r.key,
        "consumable": name,
        "state": r.state,
        "state_label": t.get(f"consumable_state.{r.state}", r.state),
        "level": f"{r.level_pct:.0f}%" if measured else "",
        "level_source": t["from_device"] if measured else t["reported_state"],
        "svg": level_svg(r.level_pct) if measured else "",
        "estimate": receipts,
        "forecast": hall_time(r.empty_forecast, "%m-%d %H:%M") if r.empty_forecast else "",
        "forecast_note": t["estimate_forecast"] if r.empty_forecast else "",
        "updated": hall_time(r.updated_at),
    }
