"""A fleet of 10,000 devices with a year of history, written by direct inserts (the consumer would take hours to
ingest it): the overview's, the device page's and the language tests' data.

Twenty halls of 500 devices (kiosks, attendance terminals, rating pads, a few simulated ones); about 5 % not
online; labels on the 24-hour kiosks; open incidents of every kind the rules raise (outage, offline, kiosk down
or degraded, reported, hall-wide, app / receipt printer / A4 printer faults, consumables), some past their SLA;
thermal paper ok / near end / end with usage counters, A4 toner and trays with IPP levels and forecasts; and for
one device (``FOCUS``) a year of health reports every ten minutes, usage, commands with their audit trail.
Everything else gets a dozen events spread over the year, so the events table holds ~200,000 rows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from broker.api.fleet_words import COMMANDS, CONSUMABLE_STATES, EVENT_TYPES, FAULT_CODES
from broker.store.db import Store
from broker.store.schema import (
    audit_log,
    commands,
    consumable_levels,
    device_labels,
    devices,
    events,
    incidents,
    presence_history,
)
from protocol.ids import uuid7

HALLS = tuple(["qingpu", "wanzhou"] + [f"hall{n:02d}" for n in range(3, 21)])
PER_HALL = 500
FOCUS = "qingpu/kiosk-0001"
PRESENCES = ("online",) * 94 + ("offline", "offline", "offline", "stale", "shutdown", "unknown")
# Every incident kind the rules raise, so each one's words appear on a page.
INCIDENT_KINDS = (
    ("outage", "critical"),
    ("offline", "critical"),
    ("kiosk_down", "critical"),
    ("kiosk_degraded", "major"),
    ("reported", "critical"),
    *[(f"fault.receipt_printer.{c}", "minor") for c in ("paper_end", "cover_open", "autocutter_error", "offline")],
    *[(f"fault.a4_printer.{c}", "minor") for c in FAULT_CODES if "-" in c],
    ("fault.app.unhealthy", "major"),
    ("fault.app.restart_failed", "major"),
    ("consumable.thermal_paper", "minor"),
    ("consumable.toner:black", "minor"),
    ("consumable.a4_paper:tray-1", "minor"),
)


@dataclass(frozen=True, slots=True)
class Seeded:
    devices: int
    events: int
    open_incidents: int
    now: datetime


def _role(n: int) -> str:
    return "kiosk" if n % 5 == 1 else "attendance" if n % 5 == 2 else "sim" if n % 97 == 0 else "rating"


def device_rows(now: datetime, rng: random.Random, per_hall: int = PER_HALL) -> list[dict[str, Any]]:
    rows = []
    for site in HALLS:
        for n in range(1, per_hall + 1):
            role = _role(n)
            device = f"{role}-{n:04d}"
            presence = "online" if f"{site}/{device}" == FOCUS else rng.choice(PRESENCES)
            rows.append(
                {
                    "key": f"{site}/{device}",
                    "site": site,
                    "device": device,
                    "role": role,
                    "agent_version": "1.4.2",
                    "presence": presence,
                    "presence_since": now - timedelta(minutes=rng.randint(1, 600)),
                    "session": rng.randint(1, 40),
                    "heartbeat_s": 60.0,
                    "first_seen": now - timedelta(days=365),
                    "last_seen": now - timedelta(seconds=rng.randint(0, 90)),
                    "stale_after": now + timedelta(seconds=90),
                    "hours24": role == "kiosk",
                }
            )
    return rows


async def _insert(store: Store, table: sa.Table, rows: Iterable[dict[str, Any]], chunk: int = 5000) -> int:
    batch: list[dict[str, Any]] = []
    n = 0
    async with store.engine.begin() as conn:
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                await conn.execute(table.insert(), batch)
                n += len(batch)
                batch = []
        if batch:
            await conn.execute(table.insert(), batch)
            n += len(batch)
    return n


def _event(site: str, device: str, seq: int, type_: str, ts: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": site,
        "device": device,
        "id": str(uuid7()),
        "type": type_,
        "seq": seq,
        "boot_id": "b",
        "ts": ts,
        "clock_synced": True,
        "replayed": False,
        "received_at": ts,
        "data": json.dumps(data),
    }


def _focus_events(now: datetime, rng: random.Random) -> Iterable[dict[str, Any]]:
    """FOCUS: health every 10 minutes for a year, usage every hour, one of every other event type."""
    site, device = FOCUS.split("/")
    seq = 0
    t = now - timedelta(days=365)
    tickets = 0
    while t <= now:
        seq += 1
        temp = 48 + 8 * rng.random() + (6 if t.hour in range(10, 16) else 0)
        yield _event(site, device, seq, "device.health", t, {
            "uptime_s": seq * 600.0, "load1": round(0.3 + rng.random(), 2), "cpu_temp_c": round(temp, 1),
            "mem_used_pct": round(35 + 10 * rng.random(), 1), "disk_used_pct": 41.0 + seq / 52_560,
            "outbox_depth": rng.randint(0, 3), "outbox_dropped": 0, "clock_synced": True, "interval_s": 600.0,
        })  # fmt: skip
        if seq % 6 == 0:
            seq += 1
            tickets += rng.randint(0, 9)
            yield _event(site, device, seq, "kiosk.usage", t, {"counters": {"tickets": tickets}})
        t += timedelta(minutes=10)
    for type_ in EVENT_TYPES:
        if type_.startswith(("attendance.", "rating.", "door.", "locker.", "duty.", "patrol.")):
            continue  # a kiosk neither punches, rates nor opens doors: the rules and duties would read them
        seq += 1
        yield _event(site, device, seq, type_, now - timedelta(minutes=seq % 50), {"note": "seeded"})


def _spread_events(keys: list[str], now: datetime, rng: random.Random, per_device: int) -> Iterable[dict[str, Any]]:
    for key in keys:
        if key == FOCUS:
            continue
        site, device = key.split("/")
        for seq in range(1, per_device + 1):
            ts = now - timedelta(minutes=rng.randint(0, 365 * 24 * 60))
            yield _event(site, device, seq, "device.health", ts, {"uptime_s": 1.0, "outbox_depth": 0,
                         "outbox_dropped": 0, "clock_synced": True, "interval_s": 60.0})  # fmt: skip


def _incidents(rows: list[dict[str, Any]], now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Open incidents of every kind on non-online devices (some breached), and 5,000 closed ones."""
    out = []
    troubled = [r for r in rows if r["presence"] != "online"]
    for i in range(max(len(troubled), len(INCIDENT_KINDS))):  # every kind at least once, even in a small fleet
        r = troubled[i % len(troubled)]
        kind, severity = INCIDENT_KINDS[i % len(INCIDENT_KINDS)]
        detected = now - timedelta(minutes=rng.choice([3, 12, 25, 45, 90, 600]))
        out.append(_incident(r, kind, severity, detected, "open" if i % 7 else "recovering", now))
    hall_wide = {**rows[0], "key": "wanzhou/*", "site": "wanzhou", "device": "*"}
    out.append(_incident(hall_wide, "hall_outage", "critical", now - timedelta(minutes=8), "open", now))
    for _ in range(5000):
        r = rng.choice(rows)
        detected = now - timedelta(days=rng.randint(1, 365))
        closed = _incident(r, "offline", "critical", detected, "closed", now)
        out.append(closed | {"closed_at": detected + timedelta(minutes=20), "open_key": None})
    return out


def summary_of(kind: str) -> str:
    """The summary the rules write for such an incident (broker/rules/incidents.py, sla.py, actions.py)."""
    head, _, rest = kind.partition(".")
    if kind in ("outage", "offline"):
        return "offline: will (connection lost)" if kind == "offline" else "stale: heartbeat overdue"
    if kind.startswith("kiosk_"):
        return "kiosk.state=down ticket,print,query" if kind == "kiosk_down" else "kiosk.state=degraded print"
    if head == "fault":
        return rest.partition(".")[2]  # the device's detail, or its bare code
    if head == "consumable":
        return f"{rest}=empty"
    return {"reported": "报障人 wang.li", "hall_outage": "12/20 台设备同时故障"}.get(kind, "")


def _incident(r: dict[str, Any], kind: str, severity: str, detected: datetime, state: str, now: datetime) -> dict:
    return {
        "id": str(uuid7()),
        "key": r["key"],
        "site": r["site"],
        "device": r["device"],
        "kind": kind,
        "severity": severity,
        "device_class": r["role"],
        "hours24": bool(r.get("hours24")),
        "state": state,
        "open_key": f"{r['key']}|{kind}|{uuid7()}",
        "summary": summary_of(kind),
        "detected_at": detected,
        "last_signal_at": detected,
        "step": "new",
    }


def _consumables(rows: list[dict[str, Any]], now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Every kiosk: thermal paper (mostly ok; near end with a counter at low; some end), toner and two trays
    with IPP levels, a few forecast to run out overnight; every state a device may report appears."""
    out = []
    states = [s for s in CONSUMABLE_STATES if s not in ("ok", "low", "empty")]
    for i, r in enumerate(x for x in rows if x["role"] == "kiosk"):
        key = r["key"]
        paper = "low" if i % 10 == 0 or key == FOCUS else "empty" if i % 37 == 3 else "ok"
        low = {"low_since": now - timedelta(hours=3), "usage_at_low": 0} if paper == "low" else {}
        out.append({"key": key, "consumable": "thermal_paper", "state": paper, "level_pct": None,
                    "updated_at": now - timedelta(minutes=2), **low})  # fmt: skip
        toner = 8.0 if i % 25 == 0 else 15 + rng.random() * 80
        forecast = now + timedelta(hours=10) if i % 25 == 0 or key == FOCUS else None
        out.append({"key": key, "consumable": "toner:black", "state": "low" if toner < 10 else "ok",
                    "level_pct": round(toner, 1), "updated_at": now - timedelta(minutes=5),
                    "empty_forecast": forecast})  # fmt: skip
        out.append({"key": key, "consumable": "a4_paper:tray-1", "state": "ok", "level_pct": 60.0,
                    "updated_at": now - timedelta(minutes=5)})  # fmt: skip
        if i < len(states):  # jam, almost-full, full, unknown: one each
            name = "waste" if "full" in states[i] else "a4_paper:tray-2"
            out.append({"key": key, "consumable": name, "state": states[i], "level_pct": None,
                        "updated_at": now - timedelta(minutes=5)})  # fmt: skip
    blank = {"level_pct": None, "low_since": None, "usage_at_low": None, "empty_forecast": None}
    return [blank | r for r in out]  # one set of columns: executemany takes the first row's


def _commands(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One command of each known name to FOCUS, each with an issue and an answer in the audit log."""
    cmds, audit = [], []
    for n, name in enumerate(COMMANDS):
        at = now - timedelta(hours=n + 1)
        cid = str(uuid7())
        state = ("succeeded", "failed", "rejected", "expired", "queued", "delivered", "running")[n % 7]
        until = at + timedelta(minutes=10)
        cmds.append({"id": cid, "key": FOCUS, "name": name, "args": "{}", "issuer": "tech.qp", "reason": "巡检",
                     "state": state, "issued_at": at, "expires_at": until, "updated_at": at})  # fmt: skip
        audit.append({"at": at, "actor": "tech.qp", "action": "command.issue", "target": FOCUS, "reason": "巡检",
                      "detail": json.dumps({"command_id": cid, "name": name})})  # fmt: skip
        if state != "queued":
            audit.append({"at": at + timedelta(seconds=5), "actor": FOCUS, "action": f"command.{state}",
                          "target": FOCUS, "reason": "", "detail": json.dumps({"command_id": cid})})  # fmt: skip
    return cmds, audit


async def seed_fleet(
    store: Store, now: datetime, *, per_hall: int = PER_HALL, per_device_events: int = 12, seed: int = 21
) -> Seeded:
    rng = random.Random(seed)
    rows = device_rows(now, rng, per_hall)
    await _insert(store, devices, rows)
    keys = [r["key"] for r in rows]
    await _insert(store, device_labels, ({"key": r["key"], "name": "zone", "value": "24h"} for r in rows
                                         if r["role"] == "kiosk"))  # fmt: skip
    await _insert(store, presence_history, (
        {"key": r["key"], "state": r["presence"], "session": r["session"], "at": r["presence_since"], "reason": ""}
        for r in rows
    ))  # fmt: skip
    n_events = await _insert(store, events, _focus_events(now, rng))
    n_events += await _insert(store, events, _spread_events(keys, now, rng, per_device_events))
    found = _incidents(rows, now, rng)
    await _insert(store, incidents, found)
    await _insert(store, consumable_levels, _consumables(rows, now, rng))
    cmds, audit = _commands(now)
    await _insert(store, commands, cmds)
    await _insert(store, audit_log, audit)
    open_n = sum(1 for r in found if r["state"] != "closed")
    return Seeded(devices=len(rows), events=n_events, open_incidents=open_n, now=now)
