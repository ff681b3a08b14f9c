"""The consumer's duties job end to end (broker/duties/jobs.py, broker/access/lockers.py), on SQLite and PostgreSQL:
devices played over the real broker, the consumer on a manual clock judging on its own timer, the notifications
it routes read back from the store. A kiosk whose check failed (told at once) and one whose check never came (told
once it was due) are each told once for the day, however often the job runs; a patrol round short of its points is
told once; an item left in a locker past the hall's limit is a minor incident and one notice to site staff."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from broker.mosquitto.local import LocalMosquitto
from runtime.clock import HALL_ZONE
from tests.support.hall import Device, ManualClock, consumer_config, start_hall, wait_until
from tests.support.hall_duties import netcheck
from tests.support.http_receiver import HttpServer

SITE = "qp"
SITES: dict[str, Any] = {
    SITE: {
        "duties": {
            "patrol": {"rounds": [{"name": "上午", "start": "09:30", "end": "10:00"}], "point_classes": ["rating"]},
            "locker_max_hold_h": 48,
        }
    }
}
START = datetime(2026, 11, 4, 9, 0, tzinfo=HALL_ZONE)  # a Wednesday
ROLES = {"it": "it_section", "tech": "technician", "wm": "window_management", "staff": "site_staff"}


def alerts(http: HttpServer) -> dict[str, Any]:
    """One webhook per role (tests/support/http_receiver.py), each recipient named after it."""
    return {
        "channels": {name: {"type": "webhook", "url": http.url(f"/{name}")} for name in ROLES},
        "recipients": {name: {"role": role, "channel": name} for name, role in ROLES.items()},
    }


async def test_missed_checks_rounds_and_overdue_items_are_told_once(
    mosquitto: LocalMosquitto, store_url: str, http: HttpServer
) -> None:
    clock = ManualClock(START)
    hall = await start_hall(consumer_config(mosquitto.port, store_url, SITES, alerts(http), "duties"), clock)
    try:
        devices = {name: Device(mosquitto.port, SITE, name, clock, role) for name, role in
                   (("k1", "kiosk"), ("k2", "kiosk"), ("k3", "kiosk"), ("pad-1", "rating"), ("pad-2", "rating"),
                    ("hand-1", "patrol"), ("locker-a", "locker"))}  # fmt: skip
        for d in devices.values():
            d.birth()
        devices["k1"].event("duty.netcheck", netcheck(True))
        devices["k2"].event("duty.netcheck", netcheck(False, ("centre",)))
        clock.advance(minutes=35)  # 09:35: the round is on
        devices["hand-1"].event("patrol.scan", {"officer": "S1", "point": "pad-1"})
        since = (START - timedelta(days=3)).isoformat()
        devices["locker-a"].event("locker.bank", {"bank": "A", "board": "ok", "compartments": [
            {"no": 1, "door": "closed", "occupied": True, "occupied_since": since},
            {"no": 2, "door": "closed", "occupied": False}]})  # fmt: skip
        await wait_until(lambda: hall.notifications(step="netcheck_failed"), what="the failed check, told at once")
        assert not await hall.notifications(step="netcheck_missing"), "a check not taken is missing only once due"
        assert not await hall.notifications(step="patrol_missed"), "the round is still on"
        clock.advance(minutes=40)  # 10:15: the check was due at 10:00, the round ended at 10:00
        await wait_until(lambda: hall.notifications(step="patrol_missed"), what="the missed round")
        await hall.settle(10)  # the job runs many more times
        failed = await hall.notifications(step="netcheck_failed")
        missing = await hall.notifications(step="netcheck_missing")
        assert {n.recipient for n in failed} == {"it", "tech"} and "未通: 中心" in failed[0].body
        assert {n.recipient for n in missing} == {"it", "tech"}, "k3 never checked: once to each"
        assert all("k3" in n.subject + n.body for n in missing)
        (round_missed,) = await hall.notifications(step="patrol_missed")
        assert round_missed.recipient == "wm" and "pad-2" in round_missed.body
        (overdue,) = await hall.notifications(step="locker_overdue")
        assert overdue.recipient == "staff"
        (incident,) = await hall.incidents(kind="locker_overdue.A.1")
        assert (incident.severity, incident.state) == ("minor", "open")
        for n in await hall.notifications():  # the recipients read Chinese: words, not the steps' codes
            text = n.subject + "\n" + n.body
            assert not re.search(r"\b[a-z]+_[a-z_]+\b|\((duty|kiosk|locker)\)", text), text
    finally:
        await hall.stop()


POWER_SITES: dict[str, Any] = {SITE: {"duties": {"power": {"departments": {"区税务局": ["tax-*"]}}}}}
TUESDAY_5PM = datetime(2026, 11, 3, 17, 0, tzinfo=HALL_ZONE)


async def test_departmental_machines_not_switched_on_or_left_on_are_told_to_it_once(
    mosquitto: LocalMosquitto, store_url: str, http: HttpServer
) -> None:
    """WZ 002:491 「自助服务区计算机设备的每日开关机由各职能部门自行负责」, from what the machines send: GIVEN two of
    the tax office's machines that worked on Tuesday afternoon and said goodbye at 17:30 WHEN on Wednesday tax-1
    boots anew (a new boot id) at 08:30 and is still speaking at 18:45 while tax-2 never comes on THEN the IT
    section is told once that tax-2 was not switched on (after 09:00) and once that tax-1 was not switched off
    (after 18:30); Tuesday's clean goodbyes are no notice, and nobody else hears of it."""
    clock = ManualClock(TUESDAY_5PM)
    hall = await start_hall(consumer_config(mosquitto.port, store_url, POWER_SITES, alerts(http), "power"), clock)
    try:
        tax = {name: Device(mosquitto.port, SITE, name, clock, "sim", boot_id=f"{name}-tue") for name in
               ("tax-1", "tax-2")}  # fmt: skip
        for d in tax.values():
            d.birth()
            d.heartbeat()
        clock.advance(minutes=30)
        for d in tax.values():
            d.goodbye()
        clock.advance(hours=15)  # Wednesday 08:30: tax-1 is switched on, tax-2 is not
        tax["tax-1"].boot_id = "tax-1-wed"
        tax["tax-1"].reconnect()
        tax["tax-1"].heartbeat()
        await hall.settle(5)
        assert not await hall.notifications(), "nothing is due before 09:00, and Tuesday ended cleanly"
        clock.advance(minutes=35)  # 09:05
        await wait_until(lambda: hall.notifications(step="power_not_on"), what="tax-2 not switched on")
        clock.advance(hours=9, minutes=40)  # 18:45: tax-1 still on
        tax["tax-1"].heartbeat()
        await wait_until(lambda: hall.notifications(step="power_not_off"), what="tax-1 left on")
        await hall.settle(10)  # the job runs many more times
        sent = await hall.notifications()
        assert sorted((n.step, n.recipient) for n in sent) == [("power_not_off", "it"), ("power_not_on", "it")]
        by_step = {n.step: n for n in sent}
        assert "tax-2" in by_step["power_not_on"].subject + by_step["power_not_on"].body
        assert "tax-1" in by_step["power_not_off"].subject + by_step["power_not_off"].body
        assert all("区税务局" in n.subject + n.body for n in sent)
    finally:
        await hall.stop()
