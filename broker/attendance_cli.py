"""``hallfleet staff import|list`` and ``hallfleet leave file|withdraw``: the window management section's roster
and the exceptions window leaders register (leave, evidence, meetings ...), each against its correction deadline.

Times on the command line are wall-clock times of the site (``2026-11-24 08:30``); an explicit offset wins.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import Any

from broker.attendance.exceptions import file_exception, withdraw_exception
from broker.attendance.model import ExceptionKind
from broker.attendance.roster import import_roster, read_roster, roster
from broker.cli_support import Handler, run_with_store
from broker.commands import current_user
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import SystemClock

KIND_ZH = {
    ExceptionKind.LEAVE: "请假",
    ExceptionKind.EVIDENCE: "补交证明",
    ExceptionKind.MEETING: "会议/培训",
    ExceptionKind.COMPENSATORY: "调休",
    ExceptionKind.DUTY: "值班",
    ExceptionKind.FORCE_MAJEURE: "不可抗力",
    ExceptionKind.EXTENDED_SERVICE: "午间延时服务",
}


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("staff", help="the staff roster (花名册) of the halls")
    ssub = st.add_subparsers(dest="staff_action", required=True)
    _cmd(ssub, "import", "import a roster, CSV or XLSX (站点, 工号, 姓名, 单位, 窗口, AB岗, 入职日期, 离职日期)",
         _import).add_argument("file", type=Path)  # fmt: skip
    p = _cmd(ssub, "list", "staff of a site (--on DAY: employed that day; default today)", _list)
    p.add_argument("site")
    p.add_argument("--on", type=date.fromisoformat, default=None, help="YYYY-MM-DD")

    lv = sub.add_parser("leave", help="register attendance exceptions: leave, evidence, meetings, duty ...")
    lsub = lv.add_subparsers(dest="leave_action", required=True)
    p = _cmd(lsub, "file", "register an exception for a staff member", _file)
    p.add_argument("site")
    p.add_argument("staff_id")
    p.add_argument("--kind", required=True, choices=[k.value for k in ExceptionKind])
    p.add_argument("--from", dest="start", required=True, help='site time, e.g. "2026-11-24 08:30"')
    p.add_argument("--to", dest="end", required=True, help='site time, e.g. "2026-11-24 17:00"')
    p.add_argument("--reason", required=True, help="事由 (goes into the record and the audit log)")
    p.add_argument("--minutes", type=int, default=0, help="extended_service: minutes of early sign-out allowed")
    p = _cmd(lsub, "withdraw", "withdraw a registered exception (kept, marked withdrawn, audited)", _withdraw)
    p.add_argument("id")
    p.add_argument("--reason", default="")


def _cmd(sub: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.add_argument("--by", default=None, help="who (default: the logged-in user)")
    p.set_defaults(func=lambda a: run_with_store(a, handler))
    return p


def _by(a: argparse.Namespace) -> str:
    return str(a.by or current_user())


async def _import(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    members = await asyncio.to_thread(read_roster, a.file)
    added, updated = await import_roster(store, members, by=_by(a), at=SystemClock().now())
    print(f"{a.file.name}: {len(members)} 人, 新增 {added} 人, 更新 {updated} 人")
    return 0


async def _list(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    day = a.on or SystemClock().now().astimezone(sites[a.site].site_calendar.zone).date()
    async with store.engine.connect() as conn:
        members = await roster(conn, a.site, day, day)
    for m in members:
        until = m.end_date.isoformat() if m.end_date else "至今"
        post = f"{m.post}岗" if m.post else "-"
        print(f"{m.staff_id:12} {m.name:8} {m.unit:16} {m.window:10} {post:4} {m.start_date} 至 {until}")
    print(f"{a.site} {day}: 在岗 {len(members)} 人")
    return 0


async def _file(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    zone = sites[a.site].site_calendar.zone
    start, end = _site_time(a.start, zone), _site_time(a.end, zone)
    exc = await file_exception(store, sites, a.site, a.staff_id, a.kind, start, end, by=_by(a),
                               at=SystemClock().now(), reason=a.reason, minutes=a.minutes)  # fmt: skip
    print(f"已登记 {exc.id}: {a.staff_id} {KIND_ZH[exc.kind]} {_fmt(start, zone)} 至 {_fmt(end, zone)}")
    if exc.due is None:  # filed after the fact, the person not back yet: the deadline runs from their return
        print("按时登记 (本人尚未返岗, 补登期限自返岗之日起计两个工作日, QP 000:40)")
    elif exc.late:
        print(f"逾期登记: 补登期限 {_fmt(exc.due, zone)} 已过, 该日仍按非正常考勤记录")
    else:
        print(f"按时登记 (补登期限 {_fmt(exc.due, zone)})")
    return 0


async def _withdraw(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    await withdraw_exception(store, a.id, by=_by(a), at=SystemClock().now(), reason=a.reason)
    print(f"已撤销 {a.id}")
    return 0


def _site_time(text: str, zone: Any) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"时间 {text!r} 格式不对, 应为 YYYY-MM-DD HH:MM (站点当地时间)") from None
    return t if t.tzinfo else t.replace(tzinfo=zone)


def _fmt(t: datetime, zone: Any) -> str:
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M")
