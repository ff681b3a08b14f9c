"""Every notice of the daily duties and the 24-hour area, rendered as its recipients read it
(broker/alerts/messages.py), says what happened in words: the zh-CN subject and body carry no Latin word beyond
the hall's own identifiers (device ids, the door's and bank's names), the English ones no code
(``patrol_missed``, ``door_forced``, ``duty``).

The notices come from the producers themselves (broker/duties/jobs.py's ``*_notice`` for every verdict their
Literal types allow, broker/access/signals.py and lockers.py for every alarm a door or locker can send), so a new
verdict or alarm without words fails here."""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import get_args

import pytest

from broker.access.lockers import overdue_notice, overdue_signals
from broker.access.signals import alarm_signals
from broker.alerts.messages import render
from broker.api.fleet_words import incident_kind_label
from broker.duties.jobs import net_notice, patrol_notice, power_notices
from broker.duties.netcheck import NetCheckDay, NetVerdict
from broker.duties.patrol import RoundDay, RoundVerdict
from broker.duties.power import OffVerdict, OnVerdict, PowerDay
from broker.rules.notices import Notice
from protocol.hall_events import DoorAlarm, DoorAlarmKind, LockerAlarm, NetTarget
from runtime.clock import HALL_ZONE
from tests.support.hall_duties import envelope

SITE, DAY = "qp", date(2026, 11, 4)
NOW = datetime(2026, 11, 4, 18, 0, tzinfo=HALL_ZONE)
# The hall's own names, which a message quotes as they are: the site and device ids, the door, the bank.
IDS = ("qp", "kiosk-3", "pc-tax", "door-24h", "locker-a", "pad-1", "pad-2", "east", "A")
# Incident steps a door or locker outage goes through on the SLA clock (broker/rules/sla.py).
INCIDENT_STEPS = ("opened", "warning", "breach", "dispatch", "dispatch_overdue", "escalation1", "resolved")
CODE = re.compile(r"\b[a-z]+_[a-z_0-9]+\b")  # snake_case: a step, kind or verdict as the code names it
CJK = re.compile(r"[\u4e00-\u9fff]")


def duty_notices() -> list[Notice]:
    out: list[Notice] = []
    for v in get_args(NetVerdict):
        n = net_notice(SITE, NetCheckDay("kiosk-3", DAY, v, None, tuple(get_args(NetTarget)) if v == "failed" else ()))
        out += [n] if n else []
    for on, off in itertools.product(get_args(OnVerdict), get_args(OffVerdict)):
        out += power_notices(SITE, PowerDay("税务局", "pc-tax", DAY, on, off, None, None))
    for v in get_args(RoundVerdict):
        start = NOW.replace(hour=9, minute=30)
        r = RoundDay(DAY, "上午", start, start + timedelta(minutes=30), v, 50.0, 2, ("pad-2",), ("S1",), ())
        n = patrol_notice(SITE, r)
        out += [n] if n else []
    return out


def access_notices() -> list[Notice]:
    """Each door and locker alarm's signal as the SLA clock pages it (its incident's kind, the device's class),
    and the overdue item's notice to site staff."""
    payloads = [("door-24h", "door", DoorAlarm(door="east", alarm=a)) for a in get_args(DoorAlarmKind)]
    payloads += [("locker-a", "locker", LockerAlarm(bank="A", compartment=3, alarm="door_fault"))]
    payloads += [("locker-a", "locker", LockerAlarm(bank="A", alarm="offline"))]
    out = []
    for device, role, p in payloads:
        env = envelope(SITE, device, "door.alarm" if role == "door" else "locker.alarm", NOW, p.model_dump())
        (s,) = alarm_signals(env, p, NOW)
        for step in INCIDENT_STEPS:
            en = incident_kind_label(s.kind, "en")
            out.append(Notice("incident:1", step, SITE, device, role, s.kind, s.severity, s.summary, en, {"at": NOW}))
    bank = {"bank": "A", "compartments": [{"no": 1, "occupied": True, "occupied_since": "2026-11-01T09:00:00+08:00"}]}
    (s,) = overdue_signals(SITE, "locker-a", bank, NOW, NOW, timedelta(hours=48))
    row = SimpleNamespace(
        id=2, site=SITE, device="locker-a", device_class="locker", kind=s.kind, summary=s.summary, detected_at=s.start
    )
    return [*out, overdue_notice(row)]


def without_ids(text: str) -> str:
    for name in sorted(IDS, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])", "", text)
    return text


def test_the_producers_make_a_notice_of_every_duty_that_can_go_wrong() -> None:
    """GIVEN every verdict WHEN the duties' notices are made THEN each failing one is a step of its own."""
    steps = {n.step for n in duty_notices()}
    assert steps == {
        "netcheck_failed",
        "netcheck_missing",
        "power_not_on",
        "power_not_off",
        "power_unclean",
        "patrol_missed",
    }


@pytest.mark.parametrize("notice", duty_notices() + access_notices(), ids=lambda n: f"{n.step}-{n.kind}")
def test_a_duty_or_access_notice_reads_as_words_in_both_languages(notice: Notice) -> None:
    zh = "\n".join(render(notice, "zh-CN", "青浦区政务服务中心", None))
    leftover = re.findall(r"[A-Za-z]{2,}", without_ids(zh))
    assert not leftover, f"raw codes in the Chinese message: {leftover}\n{zh}"
    assert notice.step not in zh and notice.device_class not in without_ids(zh)
    en = "\n".join(render(notice, "en", "Qingpu", None))
    assert not CODE.findall(without_ids(en)), f"raw codes in the English message:\n{en}"
    assert f"({notice.device_class})" not in en, "the device's kind in words, not its class code"
    if notice.ref.startswith("duty:") or notice.step == "locker_overdue":
        names = ("税务局", "上午")  # the hall's own names for the department and the round
        assert not CJK.search(re.sub("|".join(names), "", en)), f"Chinese in the English message:\n{en}"


def test_a_failed_network_check_names_the_targets_it_missed_in_words() -> None:
    (n,) = [n for n in duty_notices() if n.step == "netcheck_failed"]
    zh_subject, zh_body = render(n, "zh-CN", "青浦", None)
    assert zh_subject == "【一般】青浦 kiosk-3 网络日常检查未通过"
    assert "未通: 网关, 域名解析, 中心, 政务外网" in zh_body and "设备: kiosk-3 (日常值守)" in zh_body
    assert "日期: 2026-11-04" in zh_body, "a duty is about a day"
    en_subject, en_body = render(n, "en", "Qingpu", None)
    assert en_subject == "【minor】Qingpu kiosk-3 daily network check failed"
    assert "not reached: gateway, DNS, centre, government extranet" in en_body


def test_a_forced_door_names_the_door_and_the_controller_in_words() -> None:
    (n,) = [n for n in access_notices() if n.kind == "door_forced.east" and n.step == "opened"]
    subject, body = render(n, "zh-CN", "青浦", None)
    assert subject == "【重要】青浦 door-24h 门被强行打开 east 发生"
    assert "门 east: 门被强行打开" in body and "设备: door-24h (门禁控制器)" in body
