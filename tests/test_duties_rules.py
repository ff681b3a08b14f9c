"""The daily duties' verdicts, table-driven, each row citing the seed line it keeps (docs/hall-duties.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.duties.netcheck import verdict as net_verdict
from broker.duties.patrol import judge
from broker.duties.power import Boot, off_verdict, on_verdict

T = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)


def at(h: float) -> datetime:
    return T + timedelta(hours=h)


# QP 000:389 「网络日常检查」: the kiosk's own check, due by 10:00.
@pytest.mark.parametrize(
    ("checks", "now", "expected"),
    [
        ([{"ok": True}], 9, "ok"),
        ([{"ok": False}, {"ok": True}], 11, "ok"),  # a failed check re-run by command and passing: done
        ([{"ok": False}], 11, "failed"),
        ([], 9.9, "pending"),
        ([], 10, "missing"),
    ],
)
def test_network_check_verdict(checks: list[dict[str, bool]], now: float, expected: str) -> None:
    assert net_verdict(checks, at(now), at(10)) == expected


# WZ 002:491 「自助服务区计算机设备的每日开关机由各职能部门自行负责」: on by 09:00, off by 18:30.
@pytest.mark.parametrize(
    ("boots", "carried", "now", "expected"),
    [
        ([Boot("b2", at(8.5), at(18))], "b1", 12, "ok"),
        ([Boot("b2", at(9.5), at(18))], "b1", 12, "late"),
        ([Boot("b1", at(0), at(18))], "b1", 12, "left_on"),  # running since yesterday: yesterday's off flags it
        ([], "b1", 8, "pending"),
        ([], "b1", 9.01, "not_on"),
    ],
)
def test_power_on_verdict(boots: list[Boot], carried: str, now: float, expected: str) -> None:
    assert on_verdict(boots, carried, at(9), at(now)) == expected


@pytest.mark.parametrize(
    ("last", "shutdowns", "now", "expected"),
    [
        (18.0, [18.01], 19, "ok"),  # a clean shutdown right after its last heartbeat
        (18.0, [], 19, "unclean"),  # went quiet without one: power pulled, or the network lost for good
        (19.0, [], 20, "not_off"),  # still speaking after off_by
        (18.0, [18.01], 18.6, "pending"),  # the grace for a last heartbeat
    ],
)
def test_power_off_verdict(last: float, shutdowns: list[float], now: float, expected: str) -> None:
    boots = [Boot("b2", at(8.5), at(last))]
    assert off_verdict(boots, [at(s) for s in shutdowns], at(18.5), at(now)) == expected


def test_a_machine_never_switched_on_has_no_off_verdict() -> None:
    assert off_verdict([], [], at(18.5), at(20)) == "none"


# QP 000:120 「每天两次巡查」 (any time in the session); WZ 002:133 定时巡查 9:30 / 13:40 (window to 10:30).
@pytest.mark.parametrize(
    ("scans", "now", "min_pct", "expected", "missing"),
    [
        ([(9.6, "pad-1"), (9.7, "pad-2")], 11, 100, "done", ()),
        ([(9.6, "pad-1")], 11, 100, "missed", ("pad-2",)),
        ([(9.6, "pad-1")], 11, 50, "done", ("pad-2",)),
        ([(9.6, "pad-1")], 10, 100, "pending", ("pad-2",)),
        ([(9.0, "pad-1"), (9.6, "pad-2")], 11, 100, "missed", ("pad-1",)),  # a scan before the window is not it
    ],
)
def test_patrol_round_verdict(
    scans: list[tuple[float, str]], now: float, min_pct: float, expected: str, missing: tuple[str, ...]
) -> None:
    found = [(at(h), {"point": p, "officer": "s1"}) for h, p in scans]
    verdict, _, left = judge((at(9.5), at(10.5)), found, ["pad-1", "pad-2"], min_pct, at(now))
    assert (verdict, left) == (expected, missing)


# QP 000:389 「网络日常检查」 is the terminals' environment duty: on a day the hall is closed, only the 24-hour
# kiosks run (and owe a check); a hall kiosk that checked anyway is judged by what it found.
@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (1, {("kiosk-2", "failed"), ("kiosk-24h-1", "missing")}),  # Sunday: kiosk-1 was off, as it should be
        (2, {("kiosk-1", "missing"), ("kiosk-2", "missing"), ("kiosk-24h-1", "missing")}),  # Monday: all owe it
    ],
)
async def test_network_check_on_a_closed_day_is_owed_by_the_24_hour_kiosks_only(
    store_url: str, day: int, expected: set[tuple[str, str]]
) -> None:
    import sqlalchemy as sa

    from broker.config import ConsumerConfig
    from broker.duties.netcheck import netcheck_day
    from broker.sites import Sites
    from broker.store.db import Store
    from broker.store.schema import devices
    from runtime.clock import HALL_ZONE
    from tests.support.hall_duties import add_device, add_event, netcheck

    site = Sites(ConsumerConfig(sites={"qp": {}}).sites)["qp"]
    sunday = datetime(2026, 11, 1, 12, 0, tzinfo=HALL_ZONE)
    assert not site.site_calendar.is_working_day(sunday.date())
    store = await Store.open(store_url)
    try:
        for device in ("kiosk-1", "kiosk-2", "kiosk-24h-1"):
            await add_device(store, "qp", device, "kiosk", sunday - timedelta(days=30))
            async with store.engine.begin() as conn:  # registered, as IT does (not the deprecated name pattern)
                registered = device.startswith("kiosk-24h")
                await conn.execute(sa.update(devices).where(devices.c.device == device).values(hours24=registered))
        await add_event(store, "qp", "kiosk-2", "duty.netcheck", sunday - timedelta(hours=3), netcheck(False))
        now = sunday + timedelta(days=day - 1)
        async with store.engine.connect() as conn:
            judged = await netcheck_day(conn, "qp", site, now.date(), now)
    finally:
        await store.close()
    assert {(n.device, n.verdict) for n in judged} == expected
