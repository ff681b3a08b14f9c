"""Door and locker alarms -> incident signals, so the 24-hour area's devices share the kiosks' SLA machinery.

The rule (broker/rules/incidents.py): one outage is one incident with one clock. A controller or board that
stops answering is ``critical`` (the 24-hour area cannot be entered or its lockers used: SJ 001 表9 note a says
the area is opened to the public *through* these devices); a door held open, forced or whose lock faults, and a
compartment whose lock faults, are ``major``: each joins the device's open outage, pages the technicians and
breaches like a kiosk that is down. A door forced open is also a security matter for the site staff: the
critical/site-staff route hears of the outage when the door is offline; forced doors page through the major
route (technicians) and the site staff see it on the dashboard.
"""

from __future__ import annotations

from datetime import datetime

from broker.rules.incidents import REPLAY_HORIZON, Signal, began_at, kind_label
from broker.rules.notices import Severity
from protocol.envelope import Envelope, Frozen
from protocol.hall_events import DoorAlarm, LockerAlarm

ALARM_TYPES = frozenset({"door.alarm", "locker.alarm"})


def alarm_signals(env: Envelope, payload: Frozen, received_at: datetime) -> list[Signal]:
    """The signal a door or locker alarm carries (none for other events, or for replayed history)."""
    if env.replayed and received_at - env.ts > REPLAY_HORIZON:
        return []
    if isinstance(payload, DoorAlarm):
        kind = "door_offline" if payload.alarm == "offline" else f"door_{payload.alarm}.{payload.door}"
        severity: Severity = "critical" if payload.alarm == "offline" else "major"
        where = f"门 {payload.door}" if payload.alarm != "offline" else "控制器"
    elif isinstance(payload, LockerAlarm):
        if payload.alarm == "offline" or payload.compartment is None:
            kind, severity, where = "locker_offline", "critical", f"柜 {payload.bank}"
        else:
            kind = f"locker_door_fault.{payload.bank}.{payload.compartment}"
            severity, where = "major", f"柜 {payload.bank} {payload.compartment} 号格"
    else:
        return []
    began = began_at(env, payload.since, received_at) if payload.active else None
    summary = f"{where}: {kind_label(kind.partition('.')[0])}"
    detail = {"event_id": env.id, "since": payload.since}
    return [Signal(env.site, env.device, kind[:64], payload.active, severity, received_at, env.ts, summary, detail,
                   began)]  # fmt: skip
