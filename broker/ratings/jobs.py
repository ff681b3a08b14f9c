"""What the consumer does for the rating pads on its own, on a timer (``RatingJobs.tick``):

- read the ratings that arrived since the last tick: open a follow-up for each negative one and tell window
  management (§11.5), flag proxy-rating patterns among them and their neighbours on the same pad (SJ 001:1033);
- announce, once each, the follow-ups whose reply or rectification deadline passed (SJ 001:896 targets);
- tell window management of a pad showing 暂停服务 (QP 000:99) for longer than ``pause_alert_min`` minutes of
  opening time while the hall is open and no B post of that window is at the post now (§11.4 item 7, G9). "At the
  post" is the AB coverage's interval logic (``attendance/ab.py``, ``StaffDay.present``): a B post who signed in
  this morning but is at a meeting or on leave since noon is not there. A window with no B post in the roster,
  or no roster at all, is judged by the pause alone.

Safe on several consumers: follow-ups and flags are insert-ignore on their keys and a notice goes out only from the
transaction that inserted them; overdue follow-ups are claimed by an update; a pause notice is deduplicated by its
notification key (the pause's first event).

Each instance keeps two cursors in memory (ratings and pad states read up to the last tick, re-read with an overlap
for batches committed late); a new instance starts with a look-back, and everything it writes again is a no-op.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.alerts.routing import Router
from broker.attendance.ab import present_at
from broker.attendance.model import StaffDay
from broker.attendance.roster import roster
from broker.attendance.service import staff_days
from broker.queueing.windows import told_unattended, windows_with_waiting
from broker.ratings.followups import Opened, open_followups, overdue
from broker.ratings.model import (
    LEVEL_ZH,
    PAD_STATE_ZH,
    PadState,
    Rating,
    pad_states_arrived,
    ratings_arrived,
    ratings_near,
)
from broker.ratings.policy import policy_of
from broker.ratings.proxy import PATTERN_ZH, Flag, detect, record_flags
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store

log = logging.getLogger(__name__)

DEVICE_CLASS = "rating"
FIRST_LOOKBACK = timedelta(days=3)  # ratings a new instance reads back (all idempotent)
PAUSE_LOOKBACK = timedelta(days=10)  # pad states a new instance reads back: a long holiday plus weekends
OVERLAP = timedelta(minutes=10)  # re-read behind the cursor: a consumer batch commits after its receive times


@dataclass(slots=True)
class PadRun:
    """What one pad shows now, and since when it has been paused (the first event of the current pause)."""

    latest: PadState
    paused_since: PadState | None = None
    alerted: bool = False

    def fold(self, s: PadState) -> None:
        if (s.at, s.event_id) <= (self.latest.at, self.latest.event_id):
            return  # older than what the pad said since: it cannot change what the pad shows now
        if s.paused and self.paused_since is None:
            self.paused_since, self.alerted = s, False
        elif not s.paused:
            self.paused_since, self.alerted = None, False
        self.latest = s


@dataclass(slots=True)
class _Tick:
    """Per-tick caches: a site's staff-days are judged at most once a tick."""

    now: datetime
    present: dict[str, set[str]] = field(default_factory=dict)


class RatingJobs:
    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router
        self.pads: dict[tuple[str, str], PadRun] = {}
        self._ratings_since: datetime | None = None
        self._states_since: datetime | None = None

    async def tick(self, now: datetime) -> None:
        await self.scan_ratings(now)
        await self.announce_overdue(now)
        await self.watch_pauses(now)

    # -- new ratings -------------------------------------------------------------------------------
    async def scan_ratings(self, now: datetime) -> tuple[list[Opened], list[Flag]]:
        """Follow-ups and flags for the ratings that arrived since the last tick; returns what this call opened."""
        since = now - FIRST_LOOKBACK if self._ratings_since is None else self._ratings_since - OVERLAP
        async with self.store.engine.connect() as conn:
            new = [r for r in await ratings_arrived(conn, since) if policy_of(self.sites[r.site]).enabled]
            found = await self._detect(conn, new)
        opened: list[Opened] = []
        flagged: list[Flag] = []
        if new:
            async with self.store.engine.begin() as conn:
                opened = await open_followups(conn, self.sites, new, now)
                flagged = await record_flags(conn, found, now)
                for notice in [self._negative(o, now) for o in opened] + self._suspects(flagged, now):
                    await self.router.enqueue(conn, notice, now)
        self._ratings_since = now
        if opened or flagged:
            log.info("ratings: %d follow-up(s) opened, %d proxy flag(s) raised", len(opened), len(flagged))
        return opened, flagged

    async def _detect(self, conn: AsyncConnection, new: Sequence[Rating]) -> list[Flag]:
        """Flags among the new ratings and their neighbours on the same pads (a burst may straddle two ticks)."""
        if not new:
            return []
        reach = timedelta(seconds=max(policy_of(self.sites[s]).context_s() for s in {r.site for r in new}))
        pads = {r.key for r in new}
        near = {r.event_id: r for r in new}
        for start, end in _spans([r.at for r in new], reach):
            near.update((r.event_id, r) for r in await ratings_near(conn, start, end) if r.key in pads)
        by_site: defaultdict[str, list[Rating]] = defaultdict(list)
        for r in near.values():
            by_site[r.site].append(r)
        return [f for site, rs in sorted(by_site.items()) for f in detect(rs, policy_of(self.sites[site]))]

    def _negative(self, o: Opened, now: datetime) -> Notice:
        r = o.rating
        zone = self.sites[r.site].site_calendar.zone
        when = f"{r.at.astimezone(zone):%m-%d %H:%M}"
        if o.reply_due is not None:
            due = f"{o.reply_due:%m-%d %H:%M}"
            todo_zh, todo_en = f"实名, 请于 {due} 前回复", f"real-name: reply by {due}"
        else:
            todo_zh, todo_en = "匿名 (未关联办件), 请核实是否属客观差评", "anonymous: decide whether it is objective"
        return Notice(
            ref=f"rating:{r.event_id}",
            step="negative",
            site=r.site,
            device=r.device,
            device_class=DEVICE_CLASS,
            kind="negative_rating",
            severity="minor",
            summary_zh=f"{r.window} 窗口 {r.staff_id} 收到差评“{LEVEL_ZH[r.level]}” ({when}); {todo_zh}",
            summary_en=f"window {r.window}, staff {r.staff_id}: negative rating {r.level}/5 at {when}; {todo_en}",
            facts=_facts(r, now, reply_due=o.reply_due, real_name=o.real_name),
        )

    def _suspects(self, flagged: Sequence[Flag], now: datetime) -> list[Notice]:
        """One notice per window with new flags: what a reviewer should look at."""
        by_window: defaultdict[tuple[str, str], list[Flag]] = defaultdict(list)
        for f in flagged:
            by_window[(f.rating.site, f.rating.window)].append(f)
        notices = []
        for (site, window), fs in sorted(by_window.items()):
            events = sorted({f.rating.event_id for f in fs})
            patterns = sorted({f.pattern for f in fs})
            devices = sorted({f.rating.device for f in fs})
            what_zh, what_en = "、".join(PATTERN_ZH[p] for p in patterns), ", ".join(patterns)
            facts = {"at": now.isoformat(), "window": window, "events": events, "patterns": patterns}
            n = len(events)
            notices.append(
                Notice(
                    ref=f"rating:{events[0]}",
                    step="proxy_suspect",
                    site=site,
                    device=devices[0] if len(devices) == 1 else "*",
                    device_class=DEVICE_CLASS,
                    kind="proxy_rating",
                    severity="minor",
                    summary_zh=f"{window} 窗口 {n} 条评价疑似代评 ({what_zh}), 请核实 (hallfleet ratings flags)",
                    summary_en=f"window {window}: {n} rating(s) look like proxy ratings ({what_en});"
                    " review them with hallfleet ratings flags",
                    facts={**facts, "details": sorted({f.detail for f in fs})},
                )
            )
        return notices

    # -- deadlines ---------------------------------------------------------------------------------
    async def announce_overdue(self, now: datetime) -> int:
        async with self.store.engine.begin() as conn:
            late = await overdue(conn, now)
            for step, row in late:
                await self.router.enqueue(conn, self._overdue(step, row, now), now)
        if late:
            log.warning("ratings: %d follow-up deadline(s) missed", len(late))
        return len(late)

    def _overdue(self, step: str, row: Any, now: datetime) -> Notice:
        zone = self.sites[row.site].site_calendar.zone
        rated = f"{row.rated_at.astimezone(zone):%m-%d %H:%M}"
        if step == "reply_overdue":
            deadline = row.reply_due.astimezone(zone)
            zh = f"未在 {deadline:%m-%d %H:%M} 前回复 (实名差评回复率应达 100%)"
            en = f"not answered by {deadline:%m-%d %H:%M} (target: every real-name negative rating answered)"
        else:
            deadline = row.rectify_due.astimezone(zone)
            zh = f"属客观差评, 未在 {deadline:%m-%d %H:%M} 前整改 (客观差评整改率应达 100%)"
            en = f"objective, not rectified by {deadline:%m-%d %H:%M} (target: every objective one rectified)"
        return Notice(
            ref=f"rating:{row.event_id}",
            step=step,
            site=row.site,
            device=row.device,
            device_class=DEVICE_CLASS,
            kind="negative_rating",
            severity="major",
            summary_zh=f"{row.window} 窗口 {row.staff_id} 的差评 ({rated}, {LEVEL_ZH[row.level]}) {zh}",
            summary_en=f"window {row.window}, staff {row.staff_id}: negative rating of {rated} {en}",
            facts={"at": now.isoformat(), "event": row.event_id, "window": row.window, "staff_id": row.staff_id,
                   "due": deadline.isoformat()},
        )  # fmt: skip

    # -- pauses ------------------------------------------------------------------------------------
    async def watch_pauses(self, now: datetime) -> list[Notice]:
        """Pause notices sent by this call."""
        since = now - PAUSE_LOOKBACK if self._states_since is None else self._states_since - OVERLAP
        async with self.store.engine.connect() as conn:
            states = await pad_states_arrived(conn, since)
        for s in states:
            run = self.pads.get((s.site, s.device))
            if run is None:
                self.pads[(s.site, s.device)] = PadRun(s, s if s.paused else None)
            else:
                run.fold(s)
        self._states_since = now
        tick = _Tick(now)
        sent: list[Notice] = []
        for (site, _), run in sorted(self.pads.items()):
            notice = await self._pause_notice(site, run, tick)
            if notice is None:
                continue
            async with self.store.engine.begin() as conn:
                who = await self.router.enqueue(conn, notice, now)
            run.alerted = True
            sent.append(notice)
            log.warning("ratings: %s paused too long; told %s", notice.device, ", ".join(who) or "nobody (no route)")
        return sent

    async def _pause_notice(self, site: str, run: PadRun, tick: _Tick) -> Notice | None:
        start = run.paused_since
        if start is None or run.alerted:
            return None
        cfg = self.sites[site]
        policy = policy_of(cfg)
        cal = cfg.site_calendar
        if not policy.enabled or not cal.is_open(tick.now):
            return None
        open_min = cal.open_seconds(start.at, tick.now) / 60
        if open_min < policy.pause_alert_min:
            return None
        window = run.latest.window
        if window in await windows_with_waiting(self.store, self.sites, site, tick.now):
            return None  # tickets wait at this window: the queue job tells of the pause with them, once
        if await told_unattended(self.store, f"pad_paused:{start.event_id}"):
            return None  # told with the tickets that waited: no second alert once they are called
        b_posts = await self._b_posts(site, window, tick)
        if b_posts and b_posts & await self._present(site, tick):
            return None  # the B post is at the post: covering the window is theirs (QP 000:107, WZ 002:181)
        zone = cal.zone
        why_zh = "该窗口 B 岗不在岗" if b_posts else "该窗口未登记 B 岗"
        why_en = "the window's B post is not at work" if b_posts else "the window has no B post in the roster"
        shown = PAD_STATE_ZH[run.latest.state]
        return Notice(
            ref=f"pad_paused:{start.event_id}",
            step="pad_paused",
            site=site,
            device=start.device,
            device_class=DEVICE_CLASS,
            kind="pad_paused",
            severity="major",
            summary_zh=f"{window} 窗口评价器自 {start.at.astimezone(zone):%m-%d %H:%M} 起显示“{shown}”, 开放时间内已"
            f" {open_min:.0f} 分钟 (上限 {policy.pause_alert_min:g} 分钟), {why_zh}",
            summary_en=f"window {window}: the rating pad has shown '{run.latest.state}' since"
            f" {start.at.astimezone(zone):%m-%d %H:%M}, {open_min:.0f} min of opening time (limit"
            f" {policy.pause_alert_min:g}); {why_en}",
            facts={"at": tick.now.isoformat(), "window": window, "paused_since": start.at.isoformat(),
                   "open_min": round(open_min, 1), "staff_id": start.staff_id, "b_posts": sorted(b_posts)},
        )  # fmt: skip

    async def _b_posts(self, site: str, window: str, tick: _Tick) -> set[str]:
        today = self._today(site, tick)
        async with self.store.engine.connect() as conn:
            members = await roster(conn, site, today, today)
        return {m.staff_id for m in members if m.window == window and m.post == "B" and m.employed_on(today)}

    async def _present(self, site: str, tick: _Tick) -> set[str]:
        if site not in tick.present:
            today = self._today(site, tick)
            days: list[StaffDay] = await staff_days(self.store, self.sites, site, today, today, now=tick.now)
            tick.present[site] = {d.staff_id for d in days if d.day == today and present_at(d, tick.now)}
        return tick.present[site]

    def _today(self, site: str, tick: _Tick) -> date:
        return tick.now.astimezone(self.sites[site].site_calendar.zone).date()


def _spans(times: list[datetime], reach: timedelta) -> list[tuple[datetime, datetime]]:
    """[t - reach, t + reach] around each time, overlapping ones merged: few reads, each through the (type, ts)
    index, however the new ratings are spread."""
    spans: list[tuple[datetime, datetime]] = []
    for t in sorted(times):
        if spans and t - reach <= spans[-1][1]:
            spans[-1] = (spans[-1][0], t + reach)
        else:
            spans.append((t - reach, t + reach))
    return spans


def _facts(r: Rating, now: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "at": now.isoformat(),
        "event": r.event_id,
        "window": r.window,
        "staff_id": r.staff_id,
        "service_id": r.service_id,
        "level": r.level,
        "rated_at": r.at.isoformat(),
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in extra.items()},
    }
