"""Departmental self-service machines in the fleet (WZ 002:491 「各专区配备的专属本部门业务权限的自助服务区计算机设备的
每日开关机由各职能部门自行负责」, issue 23): the machines a hall's site config names under ``duties.power.departments``,
each an agent with no role that its department switches on in the morning and shuts down cleanly in the evening
(its agent says ``shutdown``), or leaves on (a share of them). The centre judges each machine-day from what they
send (broker/duties/power.py); a clean shutdown is no outage, so presence stays exact.

The rule: a departmental machine is not started with the fleet; its own script starts it at its time (at once when
that time passed before the run began) and stops it, so its first event of the day is its power-on.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache

from broker.duties.power import power_day
from broker.sites import SiteConfig
from broker.store.db import Store
from hallfleet import demo_scenario as ds
from hallfleet.fleet.scenario import Departments
from runtime.clock import HALL_ZONE


@cache
def _site(site: str) -> SiteConfig:
    return SiteConfig.model_validate(ds.load_sites()[site])


def halls() -> list[ds.Hall]:
    """The demo halls whose site config names departmental machines (Wanzhou's, from WZ 002)."""
    return [h for h in ds.HALLS if h.site in ds.load_sites() and _site(h.site).duties.power.departments]


def machine_names(hall: ds.Hall, k: int) -> list[str]:
    """``k`` machine names the hall's departments own, round robin over them: each pattern's text before its
    first wildcard, numbered (区税务局 tax-* -> tax-1, tax-2 ...); a department whose patterns give none is skipped."""
    prefixes = []
    power = _site(hall.site).duties.power
    for patterns in power.departments.values():
        prefix = next((p.split("*")[0] for p in patterns if "*" in p), None)
        if prefix and power.department_of(f"{prefix}1") is not None:
            prefixes.append(prefix)
    if not prefixes:
        return []
    return [f"{prefixes[i % len(prefixes)]}{i // len(prefixes) + 1}" for i in range(k)]


def left_on(index: int, share: float) -> bool:
    """Evenly spread: with a share of 0.5, every second machine of the hall (as the kiosks' A4 printers are)."""
    return int((index + 1) * share) > int(index * share)


@dataclass(frozen=True, slots=True)
class Day:
    """One machine's day: switched on at ``on``, shut down at ``off`` (None: left on)."""

    on: datetime
    off: datetime | None


def day_of(d: Departments, today: date, key: str, index: int, seed: int) -> Day:
    rng = random.Random(f"{seed}-power-{key}")

    def within(span: list[time]) -> datetime:
        first, last = (datetime.combine(today, t, HALL_ZONE) for t in span)
        return first + timedelta(seconds=rng.uniform(0, (last - first).total_seconds()))

    on, off = within(d.on), within(d.off)
    return Day(on, None if left_on(index, d.left_on_share) else off)


async def play(
    day: Day,
    until: Callable[[datetime], Awaitable[bool]],
    switch_on: Callable[[], None],
    shut_down: Callable[[], Awaitable[None]],
) -> None:
    """The department's day at one machine: on at its time (at once if that passed), off at its time (or never)."""
    await until(day.on)
    switch_on()
    if day.off is not None:
        await until(day.off)
        await shut_down()


async def verdicts_line(store: Store, today: date, now: datetime) -> str | None:
    """The departmental machines' day as the centre judges it now, on/off verdict pairs counted (``hallfleet
    fleet``'s summary); None where no hall has such machines."""
    counts: Counter[str] = Counter()
    async with store.engine.connect() as conn:
        for hall in halls():
            counts.update(f"{p.on}/{p.off}" for p in await power_day(conn, hall.site, _site(hall.site), today, now))
    if not counts:
        return None
    return "  power-on/off (WZ 002:491): " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
