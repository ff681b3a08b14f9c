"""``hallfleet ratings list|flags|review|followup|report``: the window management section's 好差评 commands.

``list`` shows a day's ratings with their flags; ``flags`` the suspected proxy ratings awaiting review and
``review`` records the verdict; ``followup list|reply|classify|rectify`` keeps the negative-rating ledger;
``report`` writes the month's statistics and the reply and rectification rates (``--out`` .xlsx or .csv).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from broker.cli_support import Handler, run_with_store
from broker.commands import current_user
from broker.ratings import followups as fu
from broker.ratings.model import LEVEL_ZH, PAD_STATE_ZH, ratings_between
from broker.ratings.proxy import PATTERN_ZH, VERDICT_ZH, FlagError, flags, review
from broker.ratings.report import build_report, write_csv, write_xlsx
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import SystemClock

_YES_NO = {"yes": True, "no": False}


def add_parsers(sub: Any) -> None:
    top = sub.add_parser("ratings", help="好差评: ratings, proxy-rating flags, negative-rating follow-ups, report")
    rsub = top.add_subparsers(dest="ratings_action", required=True)
    p = _cmd(rsub, "list", "a day's ratings with their flags", _list)
    p.add_argument("site")
    p.add_argument("--day", type=_date, default=None, help="YYYY-MM-DD (default: today)")
    p.add_argument("--window", default=None)
    p = _cmd(rsub, "flags", "suspected proxy ratings awaiting review (--all: reviewed ones too)", _flags)
    p.add_argument("--site", default=None)
    p.add_argument("--all", action="store_true")
    p = _cmd(rsub, "review", "record the verdict on a flagged rating (by event id or a unique prefix)", _review)
    p.add_argument("event")
    p.add_argument("--verdict", choices=sorted(VERDICT_ZH), required=True, help="proxy 属实代评 | honest 正常评价")
    p.add_argument("--note", default="")
    p = _cmd(rsub, "report", "monthly 好差评 statistics and reply/rectification rates (XLSX or CSV, Chinese)", _report)
    p.add_argument("site")
    p.add_argument("month", help="YYYY-MM")
    p.add_argument("--out", type=Path, required=True, help="file.xlsx (every sheet) or file.csv (every table)")

    f = rsub.add_parser("followup", help="negative-rating follow-ups (差评台账): list, reply, classify, rectify")
    fsub = f.add_subparsers(dest="followup_action", required=True)
    p = _cmd(fsub, "list", "follow-ups still owing something (--all: every one)", _followup_list)
    p.add_argument("--site", default=None)
    p.add_argument("--all", action="store_true")
    p = _cmd(fsub, "reply", "the citizen was answered (by event id or a unique prefix)", _reply)
    p.add_argument("event")
    p.add_argument("--text", required=True, help="what the citizen was told")
    p.add_argument("--objective", choices=sorted(_YES_NO), default=None, help="also record: an objective 差评?")
    p = _cmd(fsub, "classify", "record whether the negative rating is objective (客观差评)", _classify)
    p.add_argument("event")
    p.add_argument("--objective", choices=sorted(_YES_NO), required=True)
    p = _cmd(fsub, "rectify", "the cause of an objective negative rating was rectified", _rectify)
    p.add_argument("event")
    p.add_argument("--text", required=True, help="what was changed")


def _cmd(sub: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.add_argument("--by", default=None, help="who (default: the logged-in user)")
    p.set_defaults(func=lambda a: run_with_store(a, handler, (fu.FollowupError, FlagError)))
    return p


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-24") from None


def _by(a: argparse.Namespace) -> str:
    return str(a.by or current_user())


def _now() -> datetime:
    return SystemClock().now()


def _local(t: datetime | None, sites: Sites, site: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "-" if t is None else t.astimezone(sites[site].site_calendar.zone).strftime(fmt)


# -- ratings and flags -----------------------------------------------------------------------------------
async def _list(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    zone = sites[a.site].site_calendar.zone
    day = a.day or _now().astimezone(zone).date()
    start = datetime.combine(day, time(), zone)
    async with store.engine.connect() as conn:
        ratings = await ratings_between(conn, a.site, start, start + timedelta(days=1))
        flagged = await flags(conn, a.site, reviewed=True, start=start, end=start + timedelta(days=1))
    marks: defaultdict[str, list[str]] = defaultdict(list)
    for f in flagged:
        verdict = f"({VERDICT_ZH[f.verdict]})" if f.verdict else ""
        marks[f.event_id].append(PATTERN_ZH.get(f.pattern, f.pattern) + verdict)
    shown = [r for r in ratings if a.window is None or r.window == a.window]
    for r in shown:
        print(
            f"{r.at.astimezone(zone):%H:%M:%S}  {r.window:8} {r.staff_id:10} {LEVEL_ZH[r.level]:6} "
            f"{r.service_id or '(无办件)':16} {PAD_STATE_ZH.get(r.pad_state, r.pad_state):5} {r.event_id[:13]} "
            f"{' '.join(marks.get(r.event_id, []))}".rstrip()
        )
    print(f"{day} {a.site}: {len(shown)} 条评价, {sum(1 for r in shown if r.event_id in marks)} 条被标记")
    return 0


async def _flags(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    async with store.engine.connect() as conn:
        rows = await flags(conn, a.site, reviewed=a.all)
    for f in rows:
        verdict = f" {VERDICT_ZH[f.verdict]} ({f.reviewed_by})" if f.verdict else " 待核实"
        print(
            f"{f.event_id}  {_local(f.rated_at, sites, f.site)}  {f.site}/{f.device} {f.window} {f.staff_id} "
            f"{LEVEL_ZH.get(f.level, f.level)}  {PATTERN_ZH.get(f.pattern, f.pattern)}: {f.detail}{verdict}"
        )
    return 0


async def _review(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    rows = await review(store, a.event, a.verdict, by=_by(a), at=_now(), note=a.note)
    print(f"{rows[0].event_id}: {VERDICT_ZH[a.verdict]} ({', '.join(PATTERN_ZH[r.pattern] for r in rows)})")
    return 0


# -- follow-ups ------------------------------------------------------------------------------------------
async def _followup_list(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    async with store.engine.connect() as conn:
        rows = await fu.followups(conn, a.site, open_only=not a.all)
    for r in rows:
        print(
            f"{r.event_id}  {_local(r.rated_at, sites, r.site)}  {r.site} {r.window} {r.staff_id} "
            f"{LEVEL_ZH.get(r.level, r.level)} {'实名' if r.real_name else '匿名'}  {_state(r, sites)}"
        )
    return 0


def _state(r: Any, sites: Sites) -> str:
    parts = []
    if r.replied_at is not None:
        parts.append(f"已回复 {_local(r.replied_at, sites, r.site)}")
    elif r.reply_due is not None:
        parts.append(f"待回复 (期限 {_local(r.reply_due, sites, r.site)})")
    if r.objective is None:
        parts.append("待认定是否客观")
    elif not r.objective:
        parts.append("非客观差评")
    elif r.rectified_at is not None:
        parts.append(f"已整改 {_local(r.rectified_at, sites, r.site)}")
    else:
        parts.append(f"待整改 (期限 {_local(r.rectify_due, sites, r.site)})")
    return "; ".join(parts)


async def _reply(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    objective = None if a.objective is None else _YES_NO[a.objective]
    row = await fu.reply(store, sites, a.event, a.text, by=_by(a), at=_now(), objective=objective)
    print(f"{row.event_id}: {_state(row, sites)}")
    return 0


async def _classify(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    row = await fu.classify(store, sites, a.event, _YES_NO[a.objective], by=_by(a), at=_now())
    print(f"{row.event_id}: {_state(row, sites)}")
    return 0


async def _rectify(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    row = await fu.rectify(store, sites, a.event, a.text, by=_by(a), at=_now())
    print(f"{row.event_id}: {_state(row, sites)}")
    return 0


# -- report ----------------------------------------------------------------------------------------------
async def _report(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    report = await build_report(store, sites, a.site, a.month, now=_now())
    if a.out.suffix.lower() == ".xlsx":
        write_xlsx(report, a.out)
    else:
        write_csv(report, a.out)
    t = report.targets

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}%"

    print(
        f"{a.out}: 评价 {t.ratings} 条, 差评 {t.negatives} 条; 实名差评回复率 {rate(t.reply_pct)}"
        f" ({t.replied}/{t.real_name}), 客观差评整改率 {rate(t.rectify_pct)} ({t.rectified}/{t.objective})"
    )
    return 0
