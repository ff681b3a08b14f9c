"""Proxy clocking (SJ 001 「不应代替他人考勤」): the patterns a punch made for an absent colleague leaves in the
centre's records, flagged for a person to review, as proxy ratings are (broker/ratings/proxy.py). A flag changes
nothing by itself; a reviewer's verdict does, per site policy (``ProxyClockingPolicy.confirmed``): a punch
confirmed as proxy clocking (属实代打卡) is left out when the day is judged, so the day becomes 非正常考勤 unless
evidence is filed within the correction deadline, as for any missing punch.

- ``chain``: ``chain_count`` or more different staff punched in a row at one terminal, each within ``chain_gap_s``
  of the one before: one person holding up colleagues' photos, fingers or codes one after another. Real people
  queueing leave more time: stepping up, the sitting's blink, stepping away.
- ``too_fast``: the same person punched at two terminals less than ``travel_s`` apart (terminals of one
  ``same_place`` group stand side by side and never count).
- ``after_refusal``: a fingerprint or QR punch within ``fallback_s`` after a face terminal refused that person as
  not live (``attendance.punch_rejected``, reason ``not_live``, which names whom the face matched): the picture
  failed, so another method was tried.
- ``on_leave``: a punch inside the person's approved leave (请假), or on a day whose every session their leave
  covers: a colleague who punches for them at the usual sign-in time (08:50, before a leave filed from 09:00) keeps
  doing so on the days they are away.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.attendance.model import Exception_, ExceptionKind, Punch
from broker.attendance.proxy_policy import ProxyClockingPolicy
from broker.store import flag_review
from broker.store.db import Store
from broker.store.flag_review import FlagBook, insert_new
from broker.store.schema import clocking_flags, events

log = logging.getLogger(__name__)

Pattern = Literal["chain", "too_fast", "after_refusal", "on_leave"]
PATTERN_ZH: dict[str, str] = {
    "chain": "同一终端连续为多人打卡",
    "too_fast": "两台终端打卡间隔过短",
    "after_refusal": "人脸活体未通过后改用其他方式打卡",
    "on_leave": "请假期间打卡",
}
Verdict = Literal["proxy", "honest"]
VERDICT_ZH: dict[str, str] = {"proxy": "属实代打卡", "honest": "正常打卡"}
REJECTED = "attendance.punch_rejected"
FALLBACK_METHODS = ("fingerprint", "qr", "card")
Sessions = Callable[[date], Sequence[tuple[datetime, datetime]]]  # the site calendar's working sessions of a day


class ClockingFlagError(ValueError):
    """A review the centre cannot record; the message says why."""


FLAGS = FlagBook(clocking_flags, VERDICT_ZH, "punch", "punches", "clocking.review", ClockingFlagError)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A face terminal refused ``staff_id`` as not live at ``at`` (the time the rules use, as for punches)."""

    event_id: str
    staff_id: str
    device: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ClockingFlag:
    punch: Punch
    pattern: Pattern
    detail: str  # Chinese: what was seen, with the numbers

    @property
    def sort_key(self) -> tuple[str, str]:
        return self.punch.event_id, self.pattern


# -- detection (pure) ----------------------------------------------------------------------------------
def detect(
    punches: Sequence[Punch],
    refusals: Sequence[Refusal],
    leave: Mapping[str, Sequence[Exception_]],
    policy: ProxyClockingPolicy,
    zone: tzinfo,
    sessions: Sessions | None = None,
) -> list[ClockingFlag]:
    """Every flag the punches raise, in primary-key order. Give the punches and refusals of at least ``travel_s``
    and ``fallback_s`` before the ones to judge, and the site calendar's ``sessions`` (without them only a punch
    inside a leave is on leave, not one on a day of leave before the leave's first minute)."""
    if not policy.enabled:
        return []
    ordered = sorted(punches, key=lambda p: (p.at, p.event_id))
    flags = [
        *_chains(ordered, policy),
        *_too_fast(ordered, policy, zone),
        *_after_refusal(ordered, refusals, policy, zone),
    ]
    if policy.on_leave:
        flags += _on_leave(ordered, leave, zone, sessions)
    return sorted(flags, key=lambda f: f.sort_key)


def _chains(punches: Sequence[Punch], p: ProxyClockingPolicy) -> Iterator[ClockingFlag]:
    by_device: defaultdict[str, list[Punch]] = defaultdict(list)
    for punch in punches:
        by_device[punch.device].append(punch)
    for device, seq in by_device.items():
        for run in _quick_runs(seq, p.chain_gap_s):
            if len({x.staff_id for x in run}) < p.chain_count:
                continue
            span = (run[-1].at - run[0].at).total_seconds()
            staff = len({x.staff_id for x in run})
            detail = (
                f"终端 {device} 在 {span:.0f} 秒内连续为 {staff} 人打卡, 每次间隔不足 {p.chain_gap_s:g} 秒"
                f" (下限 {p.chain_count} 人)"
            )
            yield from (ClockingFlag(x, "chain", detail) for x in run)


def _quick_runs(seq: Sequence[Punch], gap_s: float) -> Iterator[list[Punch]]:
    """Maximal runs in which each punch follows the one before within ``gap_s``."""
    run: list[Punch] = []
    for punch in seq:
        if run and (punch.at - run[-1].at).total_seconds() > gap_s:
            yield run
            run = []
        run.append(punch)
    if run:
        yield run


def _too_fast(punches: Sequence[Punch], p: ProxyClockingPolicy, zone: tzinfo) -> Iterator[ClockingFlag]:
    if p.travel_s <= 0:
        return
    place = {device: i for i, group in enumerate(p.same_place) for device in group}
    last: dict[str, Punch] = {}
    for punch in punches:
        before = last.get(punch.staff_id)
        last[punch.staff_id] = punch
        if before is None or before.device == punch.device:
            continue
        if place.get(before.device, before.device) == place.get(punch.device, punch.device):
            continue
        gap = (punch.at - before.at).total_seconds()
        if gap < p.travel_s:
            detail = (
                f"{before.at.astimezone(zone):%H:%M:%S} 在终端 {before.device} 打卡, {gap:.0f} 秒后又在终端"
                f" {punch.device} 打卡 (两地之间至少 {p.travel_s:g} 秒)"
            )
            yield ClockingFlag(before, "too_fast", detail)
            yield ClockingFlag(punch, "too_fast", detail)


def _after_refusal(
    punches: Sequence[Punch], refusals: Sequence[Refusal], p: ProxyClockingPolicy, zone: tzinfo
) -> Iterator[ClockingFlag]:
    if p.fallback_s <= 0:
        return
    refused: defaultdict[str, list[Refusal]] = defaultdict(list)
    for r in refusals:
        refused[r.staff_id].append(r)
    for punch in punches:
        if punch.method not in FALLBACK_METHODS:
            continue
        window = timedelta(seconds=p.fallback_s)
        before = [r for r in refused.get(punch.staff_id, ()) if punch.at - window <= r.at <= punch.at]
        if before:
            first = min(before, key=lambda r: r.at)
            detail = (
                f"{first.at.astimezone(zone):%H:%M:%S} 起人脸终端 {len(before)} 次活体检测未通过 (终端 {first.device}),"
                f" {(punch.at - first.at).total_seconds():.0f} 秒后以{_METHOD_ZH.get(punch.method, punch.method)}打卡"
            )
            yield ClockingFlag(punch, "after_refusal", detail)


_METHOD_ZH = {"fingerprint": "指纹", "qr": "二维码", "card": "卡", "face": "人脸"}


def _on_leave(
    punches: Sequence[Punch], leave: Mapping[str, Sequence[Exception_]], zone: tzinfo, sessions: Sessions | None
) -> Iterator[ClockingFlag]:
    for punch in punches:
        taken = [e for e in leave.get(punch.staff_id, ()) if e.kind == ExceptionKind.LEAVE and e.approved]
        inside = next((e for e in taken if e.start <= punch.at < e.end), None)
        if inside is not None:
            start, end = inside.start.astimezone(zone), inside.end.astimezone(zone)
            detail = f"{start:%m-%d %H:%M} 至 {end:%m-%d %H:%M} 请假 (登记人 {inside.filed_by}), 期间打卡"
            yield ClockingFlag(punch, "on_leave", detail)
            continue
        day = punch.at.astimezone(zone).date()
        worked = list(sessions(day)) if sessions is not None else []
        if worked and all(_covered(a, b, taken) for a, b in worked):
            by = "、".join(dict.fromkeys(e.filed_by for e in taken if e.start < worked[-1][1] and e.end > worked[0][0]))
            detail = f"{day:%m-%d} 全天请假 (登记人 {by}), 当天 {punch.at.astimezone(zone):%H:%M} 打卡"
            yield ClockingFlag(punch, "on_leave", detail)


def _covered(start: datetime, end: datetime, leave: Sequence[Exception_]) -> bool:
    """Whether the leave intervals together cover [start, end) (a week's leave filed day by day covers too)."""
    reached = start
    for e in sorted(leave, key=lambda e: e.start):
        if e.start > reached:
            break
        reached = max(reached, e.end)
        if reached >= end:
            return True
    return reached >= end


# -- reading ---------------------------------------------------------------------------------------------
async def refusals(conn: AsyncConnection, site: str, start: datetime, end: datetime) -> list[Refusal]:
    """Face refusals as not live that name whom the face matched, by device clock (a synchronised one; else the
    receive time), in [start, end)."""
    c = events.c
    q = sa.select(c.device, c.id, c.ts, c.clock_synced, c.received_at, c.data).where(
        c.type == REJECTED, c.site == site, c.received_at >= start - timedelta(days=1), c.ts < end + timedelta(days=1)
    )
    out = []
    for r in (await conn.execute(q)).all():
        refusal = _refusal(r)
        if refusal is not None and start <= refusal.at < end:
            out.append(refusal)
    return out


def _refusal(r: Any) -> Refusal | None:
    try:
        data = json.loads(r.data)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("reason") != "not_live" or not data.get("staff_id"):
        return None
    at = r.ts if r.clock_synced else r.received_at
    return Refusal(event_id=r.id, staff_id=str(data["staff_id"]), device=r.device, at=at)


# -- the store -----------------------------------------------------------------------------------------
async def record_flags(conn: AsyncConnection, site: str, flags: Sequence[ClockingFlag], now: datetime) -> list[Any]:
    """Insert the flags not yet recorded (a reviewed flag is never raised again); returns the new ones."""

    def row(f: ClockingFlag) -> dict[str, Any]:
        p = f.punch
        return dict(
            event_id=p.event_id, pattern=f.pattern, site=site, device=p.device, staff_id=p.staff_id,
            method=p.method, punched_at=p.at, detail=f.detail[:500], flagged_at=now,
        )  # fmt: skip

    return await insert_new(conn, clocking_flags, sorted(flags, key=lambda f: f.sort_key), row)


async def review(store: Store, event: str, verdict: Verdict, *, by: str, at: datetime, note: str = "") -> list[Any]:
    """A person's verdict on a flagged punch (all its patterns at once); a later review replaces it, and both stay in
    the audit log. ``event`` is the punch's event id or a unique prefix of it."""
    return await flag_review.review(store, FLAGS, event, verdict, by=by, at=at, note=note)


def flags_query(sites: Iterable[str] | None = None, *, reviewed: bool = False) -> sa.Select[Any]:
    """Flag rows, newest first: those awaiting review, or with ``reviewed`` all of them."""
    c = clocking_flags.c
    q = sa.select(clocking_flags).order_by(c.punched_at.desc(), c.event_id, c.pattern)
    if sites is not None:
        q = q.where(c.site.in_(list(sites)))
    return q if reviewed else q.where(c.reviewed_at.is_(None))


async def flags_between(conn: AsyncConnection, site: str, start: datetime, end: datetime) -> list[Any]:
    """Every flag (reviewed or not) of punches in [start, end), in time order: the monthly report lists them."""
    c = clocking_flags.c
    q = sa.select(clocking_flags).where(c.site == site, c.punched_at >= start, c.punched_at < end)
    return list((await conn.execute(q.order_by(c.punched_at, c.event_id, c.pattern))).all())


async def confirmed_proxy(conn: AsyncConnection, site: str, start: datetime, end: datetime) -> set[str]:
    """Event ids of punches in [start, end) a reviewer confirmed as proxy clocking."""
    c = clocking_flags.c
    q = sa.select(c.event_id).where(
        c.site == site, c.verdict == "proxy", c.punched_at >= start - timedelta(days=1), c.punched_at < end
    )
    return {r.event_id for r in (await conn.execute(q)).all()}


def without_confirmed(
    punches: Mapping[str, list[Punch]], confirmed: set[str], policy: ProxyClockingPolicy
) -> dict[str, list[Punch]]:
    """The punches the day is judged on: a confirmed proxy punch is left out where the site says so."""
    if policy.confirmed == "noted" or not confirmed:
        return dict(punches)
    return {staff: [p for p in ps if p.event_id not in confirmed] for staff, ps in punches.items()}


def left_out_notes(
    punches: Mapping[str, list[Punch]], kept: Mapping[str, list[Punch]], zone: tzinfo
) -> dict[tuple[str, date], str]:
    """(staff, local day) -> the note a day judged without its confirmed proxy punches carries, so its 未签到 or
    旷工 says why rather than reading as a punch nobody made (SJ 001 「不应代替他人考勤」)."""
    notes: dict[tuple[str, date], list[str]] = defaultdict(list)
    for staff, ps in punches.items():
        kept_ids = {p.event_id for p in kept.get(staff, ())}
        for p in ps:
            if p.event_id not in kept_ids:
                local = p.at.astimezone(zone)
                notes[(staff, local.date())].append(f"{local:%H:%M} {_METHOD_ZH.get(p.method, p.method)}")
    return {key: f"经核查确认为代打卡, 不计: {', '.join(times)}" for key, times in notes.items()}


def days_to_scan(today: date, policy: ProxyClockingPolicy) -> tuple[date, date]:
    return today - timedelta(days=policy.lookback_days - 1), today
