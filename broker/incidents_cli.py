"""``hallfleet incident|dispatch|alerts|task|service|report``: technicians' and site staff's commands (a device's
24-hour status is IT's: ``hallfleet provision hours24``, provisioning/cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from broker.cli_support import Handler, run_with_store
from broker.commands import CommandError, current_user, fmt_time, split_device
from broker.reports import build_sla_report, write_csv, write_xlsx
from broker.rules import actions
from broker.rules.consumables import record_refill
from broker.rules.incidents import kind_label
from broker.rules.maintenance import record_service
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import dispatches, incident_timeline, incidents, notifications, tasks
from runtime.clock import SystemClock

STATE_ZH = {"open": "处理中", "recovering": "待确认恢复", "closed": "已关闭"}
RECOVERY_ZH = {"self_healed": "自愈", "remote": "远程处置", "on_site": "现场处置", "": ""}


def add_parsers(sub: Any) -> None:
    inc = sub.add_parser("incident", help="kiosk and device incidents: list, show, ack, note, report")
    isub = inc.add_subparsers(dest="incident_action", required=True)
    p = _cmd(isub, "list", "open incidents (--all: also closed)", _list)
    p.add_argument("--all", action="store_true")
    p.add_argument("--site", default=None)
    _cmd(isub, "show", "an incident and its timeline", _show).add_argument("id")
    _cmd(isub, "ack", "I am on it: stops escalation", _ack).add_argument("id")
    p = _cmd(isub, "note", "add a note to the timeline", _note)
    p.add_argument("id")
    p.add_argument("text")
    p = _cmd(isub, "reported", "site staff reported an outage of SITE/DEVICE", _reported)
    p.add_argument("device")
    p.add_argument("--at", default=None, help="when they called: HH:MM, ISO time or -15m (default now)")
    p.add_argument("--text", default="")
    _cmd(isub, "fixed", "a reported outage works again (closes once verified)", _fixed).add_argument("device")

    dsp = sub.add_parser("dispatch", help="on-site dispatches")
    dsub = dsp.add_subparsers(dest="dispatch_action", required=True)
    _cmd(dsub, "list", "open dispatches", _dispatch_list)
    for name, state in (("arrive", "on_site"), ("done", "done")):
        p = _cmd(dsub, name, f"the technician is {state.replace('_', ' ')} (by incident id)", _dispatch)
        p.add_argument("id")
        p.add_argument("--text", default="")
        p.set_defaults(state=state)

    al = sub.add_parser("alerts", help="notifications: what was sent, what failed")
    asub = al.add_subparsers(dest="alerts_action", required=True)
    p = _cmd(asub, "list", "recent notifications (--failed: only those not delivered)", _alerts_list)
    p.add_argument("--failed", action="store_true")
    p.add_argument("--limit", type=int, default=30)
    _cmd(asub, "retry", "requeue a failed notification", _alerts_retry).add_argument("id", type=int)

    tk = sub.add_parser("task", help="site staff tasks: restock, cleaning, inspection")
    tsub = tk.add_subparsers(dest="task_action", required=True)
    _cmd(tsub, "list", "open tasks", _task_list).add_argument("--site", default=None)

    p = _cmd(sub, "refill", "record a consumable refill: hallfleet refill SITE/DEVICE thermal_paper", _refill)
    p.add_argument("device")
    p.add_argument("consumable")
    p = _cmd(sub, "service", "record cleaning or a joint inspection: hallfleet service SITE/DEVICE clean", _service)
    p.add_argument("device")
    p.add_argument("kind", choices=["clean", "inspection"])
    p.add_argument("--note", default="")

    rp = sub.add_parser("report", help="reports")
    rsub = rp.add_subparsers(dest="report_action", required=True)
    p = _cmd(rsub, "sla", "monthly kiosk SLA report (CSV or XLSX, Chinese)", _report)
    p.add_argument("--site", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--out", type=Path, required=True, help="file.csv or file.xlsx")
    p.add_argument("--lang", choices=["zh-CN", "en"], default="zh-CN")


def _cmd(sub: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.add_argument("--by", default=None, help="who (default: the logged-in user)")
    p.set_defaults(func=lambda a: run_with_store(a, handler, (actions.ActionError, CommandError)))
    return p


def _by(a: argparse.Namespace) -> str:
    return str(a.by or current_user())


def _now() -> Any:
    return SystemClock().now()


async def _list(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    c = incidents.c
    q = sa.select(incidents).order_by(c.detected_at.desc()).limit(200)
    if not a.all:
        q = q.where(c.state != "closed")
    if a.site:
        q = q.where(c.site == a.site)
    for r in await store.fetch(q):
        flags = (
            ("已确认 " if r.acked_at else "")
            + ("超时 " if r.breached_at else "")
            + ("归入大厅故障" if r.parent_id else "")
        )
        print(
            f"{r.id[:13]}  {fmt_time(r.detected_at)}  {r.key:28} {kind_label(r.kind):12} {r.severity:8} "
            f"{STATE_ZH[r.state]:6} {RECOVERY_ZH.get(r.recovery, r.recovery)} {flags}".rstrip()
        )
    return 0


async def _show(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    async with store.engine.connect() as conn:
        r = await actions.find_incident(conn, a.id)
        t = (
            await conn.execute(
                sa.select(incident_timeline)
                .where(incident_timeline.c.incident_id == r.id)
                .order_by(incident_timeline.c.id)
            )
        ).all()
    print(f"{r.id}  {r.key}  {kind_label(r.kind)} ({r.kind})  {r.severity}  {STATE_ZH[r.state]}")
    for label, value in (
        ("检测", r.detected_at),
        ("报障", r.staff_reported_at),
        ("恢复", r.cleared_at),
        ("关闭", r.closed_at),
        ("超时", r.breached_at),
        ("确认", r.acked_at),
    ):
        if value is not None:
            print(f"  {label}  {fmt_time(value)}")
    if r.recovery:
        print(f"  处置  {RECOVERY_ZH[r.recovery]} {r.recovered_by}")
    for e in t:
        print(f"  {fmt_time(e.at)}  {e.entry:7} {e.actor:12} {e.text}")
    return 0


async def _ack(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    r = await actions.ack(store, a.id, by=_by(a), at=_now())
    print(f"incident {r.id} acknowledged by {_by(a)}")
    return 0


async def _note(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    await actions.note(store, a.id, a.text, by=_by(a), at=_now())
    return 0


async def _reported(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    key = "/".join(split_device(a.device))
    now = _now()
    when = actions.parse_when(a.at, now)
    incident_id = await actions.staff_reported(store, sites, key, by=_by(a), at=now, reported_at=when, text=a.text)
    print(f"report recorded on incident {incident_id}")
    return 0


async def _fixed(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    await actions.clear_reported(store, sites, "/".join(split_device(a.device)), by=_by(a), at=_now())
    return 0


async def _dispatch_list(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    d = dispatches.c
    for r in await store.fetch(sa.select(dispatches).where(d.state.in_(["open", "on_site"])).order_by(d.due_at)):
        late = " 已超期" if r.due_at < _now() else ""
        print(f"{r.incident_id[:13]}  {r.key:28} {r.state:8} 到场期限 {fmt_time(r.due_at)}{late} {r.technician}")
    return 0


async def _dispatch(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    await actions.dispatch_update(store, a.id, a.state, by=_by(a), at=_now(), text=a.text)
    return 0


async def _alerts_list(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    n = notifications.c
    q = sa.select(notifications).order_by(n.id.desc()).limit(a.limit)
    if a.failed:
        q = q.where(sa.or_(n.state == "failed", sa.and_(n.state == "pending", n.attempts > 0)))
    for r in await store.fetch(q):
        err = f"  [{r.attempts} 次: {r.last_error}]" if r.last_error else ""
        print(f"{r.id:6} {fmt_time(r.created_at)} {r.state:10} {r.recipient:14} {r.channel:10} {r.subject}{err}")
    return 0


async def _alerts_retry(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    await actions.retry_notification(store, a.id, by=_by(a), at=_now())
    return 0


async def _task_list(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    t = tasks.c
    q = sa.select(tasks).where(t.state == "open").order_by(t.due_at)
    if a.site:
        q = q.where(t.site == a.site)
    for r in await store.fetch(q):
        print(f"{r.id[:13]}  {r.key:28} {r.kind:10} {r.item:16} 期限 {fmt_time(r.due_at)}  {r.reason}")
    return 0


async def _refill(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    key = "/".join(split_device(a.device))
    async with store.engine.begin() as conn:
        closed = await record_refill(conn, key, a.consumable, by=_by(a), at=_now())
    print(f"refill of {a.consumable} at {key} recorded{'; restock task closed' if closed else ''}")
    return 0


async def _service(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    key = "/".join(split_device(a.device))
    async with store.engine.begin() as conn:
        closed = await record_service(conn, key, a.kind, by=_by(a), at=_now(), note=a.note, sites=sites)
    print(f"{a.kind} of {key} recorded; {len(closed)} task(s) closed")
    return 0


async def _report(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    report = await build_sla_report(store, sites, a.site, a.month, now=_now())
    suffix = a.out.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise ValueError("--out must end in .csv or .xlsx")
    (write_xlsx if suffix == ".xlsx" else write_csv)(report, a.out, a.lang)
    print(f"{a.out}: {len(report.devices)} devices, {len(report.incidents)} incidents")
    return 0
