"""Attendance report benchmark: the monthly bulletin for 1,000 staff x 31 days, time and peak memory.

    .venv/bin/python -m bench.attendance [--staff 1000] [--repeat 3] [--backend sqlite|postgres|both]

Prints figures, asserts nothing; the same figures go to ``bench/results/attendance-<date>.md``.

The store holds what a hall's would after two months: December 2026 (31 days, 23 working days) and November of
1,000 staff on 8 terminals, 2 punches a working day each (5 % late, 3 % early, 1 % without sign-in, 1 % without
sign-out, 0.5 % absent, 2 % on leave with the exception filed, 1 % of punches from an unsynchronised clock, half of
those stamped 1970), 100,000 kiosk events beside them in the events table, one terminal outage, 200 locked days.

Measured, in one process, for December: the baseline (``load_punches`` alone: reading the month's raw punches),
then ``load_period`` (roster, punches, exceptions, faults, locks, every staff-day judged), ``monthly_by_unit``
and ``write_xlsx`` (the bulletin plus the exception details). Times are the best of ``--repeat`` runs; then one
more run under tracemalloc gives the peak of Python allocations, and VmHWM (peak resident set, reset before each
store through /proc/self/clear_refs) the process's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench._machine import cpu_model, load_average, memory_total
from bench._run import write_results
from broker.attendance.policy import MonthlyRule, PunchPolicy
from broker.attendance.reports import exception_details, monthly_by_unit, write_xlsx
from broker.attendance.service import _by_device_clock, _by_receive_time, load_period, load_punches
from broker.calendar import SiteCalendar
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import attendance_exceptions, attendance_locks, devices, events, presence_history, staff

SITE = "bench"
ZONE = ZoneInfo("Asia/Shanghai")
MONTH = "2026-12"
FIRST, LAST = dt.date(2026, 12, 1), dt.date(2026, 12, 31)
TERMINALS = [f"att-{i:02d}" for i in range(1, 9)]
SITES = Sites({SITE: SiteConfig(name="基准测试政务服务中心")})
NOW = dt.datetime(2027, 1, 6, 12, 0, tzinfo=ZONE)
T = TypeVar("T")


# -- data ----------------------------------------------------------------------------------------------------
@dataclass
class Data:
    staff: list[dict[str, Any]]
    punches: list[dict[str, Any]]
    other: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    locks: list[dict[str, Any]]


def at(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZONE) + dt.timedelta(minutes=minutes)


def make_data(n_staff: int, seed: int = 7) -> Data:
    rng = random.Random(seed)
    cal = SiteCalendar(SITES[SITE].calendar)
    people = [f"S{i:05d}" for i in range(n_staff)]
    data = Data([], [], [], [], [])
    for i, sid in enumerate(people):
        data.staff.append({"site": SITE, "staff_id": sid, "name": f"职员{i}", "unit": f"单位{i % 40:02d}",
                           "window": f"{i % 120 + 1}号窗口", "post": "AB"[i % 2], "start_date": dt.date(2025, 1, 1),
                           "end_date": None, "updated_at": NOW})  # fmt: skip
    day = dt.date(2026, 11, 1)
    while day <= LAST:
        if cal.is_working_day(day):
            for sid in people:
                _staff_day(rng, data, sid, day)
        day += dt.timedelta(days=1)
    data.other = [_event(rng, "kiosk.usage", f"kiosk-{rng.randrange(40)}", at(FIRST, rng.randrange(61 * 1440)),
                         {"counters": {"tickets": rng.randrange(10_000)}}) for _ in range(100_000)]  # fmt: skip
    return data


def _staff_day(rng: random.Random, data: Data, sid: str, day: dt.date) -> None:
    r = rng.random()
    if r < 0.005:
        return  # absent
    if r < 0.025:
        data.exceptions.append({"id": str(uuid.uuid4()), "site": SITE, "staff_id": sid, "kind": "leave",
                                "start": at(day, 540), "end": at(day, 1050), "minutes": 0, "filed_at": at(day, 480),
                                "filed_by": "leader", "reason": "事假", "approved": True, "late": False})  # fmt: skip
        return
    late, early = rng.random() < 0.05, rng.random() < 0.03
    t_in = rng.randrange(541, 580) if late else rng.randrange(500, 540)
    t_out = rng.randrange(990, 1049) if early else rng.randrange(1050, 1090)
    if rng.random() >= 0.01:
        data.punches.append(_punch(rng, sid, at(day, t_in)))
    if rng.random() >= 0.01:
        data.punches.append(_punch(rng, sid, at(day, t_out)))
    if rng.random() < 0.01 and len(data.locks) < 200 and day >= FIRST:
        data.locks.append({"site": SITE, "staff_id": sid, "day": day, "verdict": "missing_in",
                           "reason": "未签到, 逾期未补证明", "locked_at": at(day, 3000)})  # fmt: skip


def _punch(rng: random.Random, sid: str, t: dt.datetime) -> dict[str, Any]:
    row = _event(rng, "attendance.punch", rng.choice(TERMINALS), t, {"staff_id": sid, "method": "face"})
    if rng.random() < 0.01:  # unsynchronised clock; half of them a flat battery
        row["clock_synced"] = False
        if rng.random() < 0.5:
            row["ts"] = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(86_400))
    return row


_seq = [0]


def _event(rng: random.Random, kind: str, device: str, t: dt.datetime, data: dict[str, Any]) -> dict[str, Any]:
    _seq[0] += 1
    return {"site": SITE, "device": device, "id": str(uuid.uuid4()), "type": kind, "seq": _seq[0], "boot_id": "b",
            "ts": t, "clock_synced": True, "replayed": False, "received_at": t + dt.timedelta(seconds=rng.random()),
            "data": json.dumps(data)}  # fmt: skip


async def fill(store: Store, data: Data) -> None:
    async with store.engine.begin() as conn:
        for table, rows in ((staff, data.staff), (events, data.punches), (events, data.other),
                            (attendance_exceptions, data.exceptions), (attendance_locks, data.locks)):  # fmt: skip
            for i in range(0, len(rows), 5000):
                await conn.execute(table.insert(), rows[i : i + 5000])
        await conn.execute(devices.insert(), [{"key": f"{SITE}/{d}", "site": SITE, "device": d, "role": "attendance",
                                               "first_seen": NOW} for d in TERMINALS])  # fmt: skip
        key = f"{SITE}/{TERMINALS[2]}"
        await conn.execute(presence_history.insert(), [
            {"key": key, "state": "offline", "session": 1, "at": at(dt.date(2026, 12, 10), 480), "reason": "will"},
            {"key": key, "state": "online", "session": 2, "at": at(dt.date(2026, 12, 10), 570), "reason": "birth"},
        ])  # fmt: skip
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            await conn.execute(sa.text("ANALYZE"))


# -- measuring -----------------------------------------------------------------------------------------------
async def timed(fn: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = await fn()
    return out, time.perf_counter() - t0


async def baseline(store: Store) -> int:
    start, end = at(FIRST, 0), at(LAST + dt.timedelta(days=1), 0)
    async with store.engine.connect() as conn:
        punches = await load_punches(conn, SITE, start, end, PunchPolicy())
    return sum(map(len, punches.values()))


async def query_ms(store: Store) -> tuple[float, float]:
    """The two reads of load_punches on their own: by the device clock (index) and by the receive time."""
    start, end = at(FIRST, 0), at(LAST + dt.timedelta(days=1), 0)
    out = []
    async with store.engine.connect() as conn:
        for q in (_by_device_clock(SITE, start, end), _by_receive_time(SITE, start, end, False)):
            t0 = time.perf_counter()
            (await conn.execute(q)).all()
            out.append((time.perf_counter() - t0) * 1000)
    return out[0], out[1]


async def pipeline(store: Store, path: Path) -> dict[str, float]:
    t: dict[str, float] = {}
    p, t["staff_days"] = await timed(lambda: load_period(store, SITES, SITE, FIRST, LAST, now=NOW))
    t0 = time.perf_counter()
    monthly = monthly_by_unit(p.days, p.members, MonthlyRule(), MONTH, site_name=p.site_name)
    t["monthly_by_unit"] = time.perf_counter() - t0
    details = exception_details(p.days, p.members, FIRST, LAST, faults=p.faults, zone=p.zone, site_name=p.site_name)
    t0 = time.perf_counter()
    write_xlsx([monthly, details], path)
    t["write_xlsx"] = time.perf_counter() - t0
    t["days"], t["monthly_rows"], t["detail_rows"] = len(p.days), len(monthly.rows), len(details.rows)
    return t


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm() -> None:
    with contextlib.suppress(OSError):  # resets VmHWM to the current RSS (Linux >= 4.0)
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")


async def measure(url: str, data: Data, repeat: int, work: Path) -> dict[str, float]:
    store = await Store.open(url)
    try:
        await fill(store, data)
        base = min([(await timed(lambda: baseline(store)))[1] for _ in range(repeat)])
        by_ts, by_received = (min(x) for x in zip(*[await query_ms(store) for _ in range(repeat)], strict=True))
        runs = [await pipeline(store, work / "bulletin.xlsx") for _ in range(repeat)]
        best = {k: min(r[k] for r in runs) for k in runs[0]}
        best["baseline"], best["q_ts_ms"], best["q_received_ms"] = base, by_ts, by_received
        reset_hwm()
        hwm_before = vm_hwm_mib()
        tracemalloc.start()
        await pipeline(store, work / "bulletin.xlsx")
        best["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        best["hwm_mib"], best["hwm_before_mib"] = vm_hwm_mib(), hwm_before
        best["xlsx_kib"] = (work / "bulletin.xlsx").stat().st_size / 1024
        return best
    finally:
        await store.close()


# -- report --------------------------------------------------------------------------------------------------
_pg: Any = None


async def url_for(backend: str, work: Path) -> str:
    global _pg
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{work}/attendance.db"
    from tests.support.postgres import LocalPostgres

    if _pg is None:
        _pg = LocalPostgres(work / "pg")
        _pg.start()
    url: str = _pg.create_database(f"bench_attendance_{uuid.uuid4().hex[:8]}")
    return url


def row(backend: str, r: dict[str, float]) -> str:
    total = r["staff_days"] + r["monthly_by_unit"] + r["write_xlsx"]
    return (
        f"| {backend} | {r['baseline']:.2f} | {r['staff_days']:.2f} | {r['monthly_by_unit']:.3f} | "
        f"{r['write_xlsx']:.2f} | {total:.2f} | {total / r['baseline']:.1f} | {r['q_ts_ms']:.0f} | "
        f"{r['q_received_ms']:.0f} | {r['traced_peak_mib']:.0f} | {r['hwm_mib']:.0f} (from {r['hwm_before_mib']:.0f}) |"
    )


async def main_async(a: argparse.Namespace) -> list[str]:
    t0 = time.perf_counter()
    data = make_data(a.staff)
    dec = sum(1 for p in data.punches if p["received_at"] >= at(FIRST, 0))
    lines = [
        f"# bench.attendance {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"- machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} CPUs, {memory_total()}, load {load_average()}",
        f"- python {platform.python_version()}; command: {' '.join(['python -m bench.attendance', *sys.argv[1:]])}",
        f"- data: {a.staff} staff in 40 units, {len(data.punches):,} punches over November and December 2026"
        f" ({dec:,} in December), {len(data.other):,} kiosk events, {len(data.exceptions):,} leave filings,"
        f" {len(data.locks)} locks; best of {a.repeat} runs",
        "",
        "Seconds unless marked. baseline = `load_punches` for December alone; total = staff_days + monthly_by_unit +"
        " write_xlsx; ratio = total / baseline. q ts / q recv: the two reads inside load_punches (by device clock"
        " through the (type, ts) index; by receive time for unsynchronised clocks). Memory: tracemalloc peak of one"
        " pipeline run, and the process VmHWM after it (reset before; 'from' = the resident set it started at).",
        "",
        "| store | baseline | staff_days | monthly_by_unit | write_xlsx | total | ratio | q ts ms | q recv ms |"
        " traced peak MiB | VmHWM MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    backends = ["sqlite", "postgres"] if a.backend == "both" else [a.backend]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for backend in backends:
                results[backend] = await measure(await url_for(backend, Path(tmp)), data, a.repeat, Path(tmp))
                lines.append(row(backend, results[backend]))
                print(lines[-1], flush=True)
        finally:
            _stop_pg()
    r = next(iter(results.values()))
    lines += ["", f"- staff-days judged: {r['days']:,.0f}; bulletin rows: {r['monthly_rows']:,.0f} (with unit"
              f" subtotals); exception rows: {r['detail_rows']:,.0f}; workbook {r['xlsx_kib']:,.0f} KiB",
              f"- bench took {time.perf_counter() - t0:.0f} s"]  # fmt: skip
    return lines


def _stop_pg() -> None:
    global _pg
    if _pg is not None:
        _pg.stop()
        _pg = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.attendance")
    p.add_argument("--staff", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    lines = asyncio.run(main_async(a))
    write_results("attendance", dt.date.today(), "\n".join(lines), echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
