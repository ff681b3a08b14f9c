"""Proxy-rating detection: staff must not rate on the citizen's behalf (SJ 001:1033). What the pad reports with
each rating (its state at the press, the service it is bound to, the delay after the service ended, the time since
a staff key) and the rhythm of ratings on one pad show the patterns below. A match is a flag for a person to
review, with the reason in Chinese; the rating itself stays as it is and counts until a reviewer confirms it.

- ``paused``: pressed while the pad showed 暂停服务 / 请稍后 (QP 000:99): nobody was being served.
- ``no_service``: bound to no ticket or 办件, or pressed while the pad was idle or the service still running;
  except the late rating the pad sends when its prompt timed out (idle, no service, ``delay_s`` after the
  service ended, within ``late_rating_s``, no other rating since that end), which is accepted.
- ``too_fast``: pressed sooner after the service ended than a person reads the pad (``min_human_delay_s``).
- ``staff_key``: pressed within ``staff_key_window_s`` of a staff key on the same pad, other than the 办结 key
  that ended the service (a pad without a queue system ends services on its own staff key: rating right
  after that key is the normal flow, judged by ``too_fast`` only).
- ``burst``: more than ``burst_count`` ratings on one pad within ``burst_window_s``.
- ``burst_top``: such a burst that is all 非常满意 for one staff member: the shape of someone rating themselves.
  It replaces ``burst`` for that run, so one run gives one flag per rating.

A pad in ``offline`` state is not a pattern: it says the pad lost its link, not that nobody was served.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.ratings.model import PAD_STATE_ZH, PAUSED, Rating
from broker.ratings.policy import TOP_LEVEL, RatingPolicy
from broker.store import flag_review
from broker.store.db import Store
from broker.store.flag_review import FlagBook, insert_new
from broker.store.schema import rating_flags

Pattern = Literal["paused", "no_service", "too_fast", "staff_key", "burst", "burst_top"]
PATTERN_ZH: dict[str, str] = {
    "paused": "暂停服务时评价",
    "no_service": "无办件评价",
    "too_fast": "评价快于常人",
    "staff_key": "工作人员按键后即评价",
    "burst": "短时集中评价",
    "burst_top": "同一人短时集中获非常满意",
}
END_KEY_TOLERANCE_S = 0.5  # a staff key this close to the service end is the key that ended it
Verdict = Literal["proxy", "honest"]
VERDICT_ZH: dict[str, str] = {"proxy": "属实代评", "honest": "正常评价"}


class FlagError(ValueError):
    """A review the centre cannot record; the message says why."""


FLAGS = FlagBook(rating_flags, VERDICT_ZH, "rating", "ratings", "rating.review", FlagError)


@dataclass(frozen=True, slots=True)
class Flag:
    rating: Rating
    pattern: Pattern
    detail: str  # Chinese: what was seen, with the numbers

    @property
    def sort_key(self) -> tuple[str, str]:
        return self.rating.event_id, self.pattern


# -- detection (pure) ----------------------------------------------------------------------------------
def detect(ratings: Sequence[Rating], policy: RatingPolicy) -> list[Flag]:
    """Every flag the ratings raise, in primary-key order (so concurrent writers take row locks alike). Give the
    ratings of at least ``policy.context_s()`` around the ones to judge: bursts and late ratings need them."""
    by_pad: defaultdict[tuple[str, str], list[Rating]] = defaultdict(list)
    for r in ratings:
        by_pad[r.key].append(r)
    flags: list[Flag] = []
    for pad in by_pad.values():
        pad.sort(key=lambda r: (r.at, r.event_id))
        for i, r in enumerate(pad):
            flags += _single(r, policy, late=_is_late(pad, i, policy))
        for run in _runs(pad, policy):
            flags += _burst_flags(run, policy)
    return sorted(flags, key=lambda f: f.sort_key)


def _is_late(pad: list[Rating], i: int, p: RatingPolicy) -> bool:
    """The pad's prompt for the last service timed out and the citizen rated afterwards: the pad sends that as an
    idle rating with no service, ``delay_s`` after the service ended (agent/roles/rating.py). It is that service's
    rating if it comes within ``late_rating_s`` and no other rating came on the pad since the service ended."""
    r = pad[i]
    if r.service_id is not None or r.pad_state != "idle" or r.delay_s is None or r.delay_s > p.late_rating_s:
        return False
    return i == 0 or pad[i - 1].at < r.at - timedelta(seconds=r.delay_s)


def _single(r: Rating, p: RatingPolicy, *, late: bool) -> Iterator[Flag]:
    if r.pad_state in PAUSED:
        yield Flag(r, "paused", f"按键时评价器显示“{PAD_STATE_ZH[r.pad_state]}”, 此时无人办件")
    missing = []
    if r.service_id is None:
        missing.append("未关联票号或办件编号")
    if r.pad_state == "idle":
        missing.append("按键时评价器空闲, 无待评价办件")
    elif r.pad_state == "serving":
        missing.append("按键时办件尚在办理, 未办结")
    if missing and not late:
        yield Flag(r, "no_service", "; ".join(missing))
    if r.delay_s is not None and r.delay_s < p.min_human_delay_s:
        yield Flag(r, "too_fast", f"办结后 {r.delay_s:.1f} 秒即按键, 快于常人 (下限 {p.min_human_delay_s:g} 秒)")
    if _after_staff_key(r, p):
        after, limit = r.since_staff_key_s, p.staff_key_window_s
        yield Flag(r, "staff_key", f"工作人员在评价器上按键后 {after:.1f} 秒即评价 ({limit:g} 秒内), 且该键不是办结键")


def _after_staff_key(r: Rating, p: RatingPolicy) -> bool:
    """A staff key shortly before the rating, other than the key that ended the service: where a pad runs on its own
    staff keys, the 办结 key is the service end itself (the pad stamps both at once, so the time since the key is not
    less than ``delay_s``), and a citizen rating a few seconds after it is the normal flow."""
    since = r.since_staff_key_s
    if since is None or since >= p.staff_key_window_s:
        return False
    return r.delay_s is None or since < r.delay_s - END_KEY_TOLERANCE_S


def _runs(pad: list[Rating], p: RatingPolicy) -> Iterator[list[Rating]]:
    """Maximal runs of ratings covered by windows of ``burst_window_s`` holding more than ``burst_count``; windows
    that share a rating join one run."""
    first = 0
    run: tuple[int, int] | None = None
    for last, r in enumerate(pad):
        while (r.at - pad[first].at).total_seconds() > p.burst_window_s:
            first += 1
        if last - first + 1 <= p.burst_count:
            continue
        if run is not None and first <= run[1]:
            run = (run[0], last)
        else:
            if run is not None:
                yield pad[run[0] : run[1] + 1]
            run = (first, last)
    if run is not None:
        yield pad[run[0] : run[1] + 1]


def _burst_flags(run: list[Rating], p: RatingPolicy) -> list[Flag]:
    span = (run[-1].at - run[0].at).total_seconds()
    limit = f"超过 {p.burst_count} 条/{p.burst_window_s:g} 秒"
    staff = {r.staff_id for r in run}
    if len(staff) == 1 and all(r.level == TOP_LEVEL for r in run):
        detail = f"工作人员 {run[0].staff_id} 在 {span:.0f} 秒内于同一评价器连续获得 {len(run)} 个非常满意 ({limit})"
        return [Flag(r, "burst_top", detail) for r in run]
    detail = f"评价器 {run[0].device} 在 {span:.0f} 秒内收到 {len(run)} 条评价 ({limit})"
    return [Flag(r, "burst", detail) for r in run]


# -- the store -----------------------------------------------------------------------------------------
async def record_flags(conn: AsyncConnection, flags: Sequence[Flag], now: datetime) -> list[Flag]:
    """Insert the flags not yet recorded (a reviewed flag is never raised again); returns the new ones."""

    def row(f: Flag) -> dict[str, Any]:
        r = f.rating
        return dict(
            event_id=r.event_id, pattern=f.pattern, site=r.site, device=r.device, window=r.window,
            staff_id=r.staff_id, level=r.level, rated_at=r.at, detail=f.detail[:500], flagged_at=now,
        )  # fmt: skip

    return await insert_new(conn, rating_flags, sorted(flags, key=lambda f: f.sort_key), row)


async def review(store: Store, event: str, verdict: Verdict, *, by: str, at: datetime, note: str = "") -> list[Any]:
    """A person's verdict on a flagged rating (all its patterns at once); a later review replaces it, and both
    stay in the audit log. ``event`` is the rating's event id or a unique prefix of it."""
    return await flag_review.review(store, FLAGS, event, verdict, by=by, at=at, note=note)


async def flags(
    conn: AsyncConnection, site: str | None = None, *, reviewed: bool = False, start: datetime | None = None,
    end: datetime | None = None,
) -> list[Any]:  # fmt: skip
    """Flag rows in time order: those awaiting review, or with ``reviewed`` all of them."""
    c = rating_flags.c
    q = sa.select(rating_flags).order_by(c.rated_at, c.event_id, c.pattern)
    if site is not None:
        q = q.where(c.site == site)
    if not reviewed:
        q = q.where(c.reviewed_at.is_(None))
    if start is not None:
        q = q.where(c.rated_at >= start)
    if end is not None:
        q = q.where(c.rated_at < end)
    return list((await conn.execute(q)).all())
