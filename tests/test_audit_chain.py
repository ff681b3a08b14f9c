"""Hash chains over the audit log and the attendance corrections, on both backends: what the writers chain
verifies; an altered, deleted or inserted record, a removed link and a cut-short head are each named."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from broker.attendance.exceptions import file_exception, withdraw_exception
from broker.attendance.locking import lock_due
from broker.attendance.model import StaffDay, Verdict
from broker.attendance.roster import StaffMember, import_roster
from broker.audit.verify import Problem, verify
from broker.audit.verify import Verdict as ChainVerdict
from broker.calendar import CalendarConfig, TimetableConfig
from broker.sites import SiteConfig, Sites
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import attendance_exceptions, audit_log, record_chain, record_chain_heads
from hallfleet.cli import main

SH = ZoneInfo("Asia/Shanghai")
HOURS = [TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["08:30-12:00", "13:30-17:00"])]
QP = SiteConfig(name="青浦区政务服务中心", calendar=CalendarConfig(timetables=HOURS), go_live=date(2026, 11, 20))
SITES = Sites({"qp": QP})
FRI, TUE, WED = date(2026, 11, 20), date(2026, 11, 24), date(2026, 11, 25)
MONTH = "2026-11"


def local(day: date, hhmm: str) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=SH)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    yield s
    await s.close()


async def judge(site: str, first: date, last: date) -> list[StaffDay]:
    """S1 late on Friday with no exception: locked at Tuesday's deadline."""
    return [StaffDay("S1", FRI, Verdict.LATE, "迟到 12 分钟")] if first <= FRI <= last else []


async def a_month_of_records(store: Store) -> str:
    """Audit rows, a filing, a withdrawal and a lock, all through the writers; returns the withdrawn id."""
    members = [StaffMember("qp", s, f"名{s}", "区税务局", "W1", "A", date(2026, 1, 1), None) for s in ("S1", "S2")]
    await import_roster(store, members, by="admin", at=local(date(2026, 11, 2), "09:00"))
    async with store.engine.begin() as conn:
        for i in range(3):
            await audit(conn, at=local(date(2026, 11, 3), f"10:0{i}"), actor="op", action="cmd.issue",
                        target="qp/kiosk-1", reason=f"第 {i} 次")  # fmt: skip
    keep = await file_exception(store, SITES, "qp", "S2", "leave", local(TUE, "08:30"), local(TUE, "17:00"),
                                by="leader", at=local(date(2026, 11, 23), "09:00"), reason="病假")  # fmt: skip
    gone = await file_exception(store, SITES, "qp", "S2", "meeting", local(WED, "09:00"), local(WED, "11:00"),
                                by="leader", at=local(date(2026, 11, 23), "09:05"), reason="区里开会")  # fmt: skip
    await withdraw_exception(store, gone.id, by="leader", at=local(date(2026, 11, 23), "15:00"), reason="会议取消")
    assert await lock_due(store, SITES, local(WED, "17:00"), judge) == 1
    assert keep.id != gone.id
    return gone.id


async def verified(store: Store, chain: str) -> ChainVerdict:
    async with store.engine.connect() as conn:
        return await verify(conn, chain, MONTH)


async def sql(store: Store, stmt: sa.Executable) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(stmt)


async def test_what_the_writers_chain_verifies_and_the_head_is_the_stored_one(store: Store) -> None:
    await a_month_of_records(store)
    corrections = {"attendance_exception", "attendance_withdrawal", "attendance_lock", "attendance_locked_day"}
    for chain, sources in (("audit", {"audit_log"}), ("corrections", corrections)):
        v = await verified(store, chain)
        assert v.ok, v.findings
        stored = (await store.fetch(sa.select(record_chain_heads).where(record_chain_heads.c.chain == chain)))[0]
        assert (stored.month, stored.seq, stored.hash) == (MONTH, v.links, v.head)
        links = await store.fetch(sa.select(record_chain.c.source).where(record_chain.c.chain == chain))
        assert {r.source for r in links} == sources
    # 3 commands, the roster import (2 staff), 2 filings, a withdrawal, a lock: each one audit row, each linked.
    rows = await store.scalar(sa.select(sa.func.count()).select_from(audit_log))
    assert (await verified(store, "audit")).links == rows


async def test_an_audit_row_altered_in_sql_is_named(store: Store) -> None:
    await a_month_of_records(store)
    victim = await store.scalar(sa.select(sa.func.min(audit_log.c.id)).where(audit_log.c.action == "cmd.issue"))
    await sql(store, audit_log.update().where(audit_log.c.id == victim).values(reason="改过的理由"))
    v = await verified(store, "audit")
    assert [(f.problem, f.source, f.ref) for f in v.findings] == [(Problem.ALTERED, "audit_log", f"[{victim}]")]


async def test_a_filing_deleted_and_a_withdrawal_undone_are_named(store: Store) -> None:
    gone = await a_month_of_records(store)
    e = attendance_exceptions.c
    await sql(store, attendance_exceptions.update().where(e.id == gone).values(withdrawn_at=None))
    v = await verified(store, "corrections")
    found = [(f.problem, f.source, f.ref) for f in v.findings]
    assert found == [(Problem.DELETED, "attendance_withdrawal", f'["{gone}"]')]
    await sql(store, attendance_exceptions.delete().where(e.staff_id == "S2", e.kind == "leave"))
    first = (await verified(store, "corrections")).findings[0]
    assert (first.problem, first.source, first.seq) == (Problem.DELETED, "attendance_exception", 1)


async def test_an_audit_row_inserted_in_sql_is_named(store: Store) -> None:
    await a_month_of_records(store)
    await sql(store, audit_log.insert().values(id=999, at=local(date(2026, 11, 4), "10:00"), actor="op",
                                               action="cmd.issue", target="qp/kiosk-1", reason="补的"))  # fmt: skip
    v = await verified(store, "audit")
    assert [(f.problem, f.source, f.ref) for f in v.findings] == [(Problem.INSERTED, "audit_log", "[999]")]


async def test_a_row_moved_out_of_its_month_counts_as_altered(store: Store) -> None:
    await a_month_of_records(store)
    victim = await store.scalar(sa.select(sa.func.max(audit_log.c.id)))
    await sql(store, audit_log.update().where(audit_log.c.id == victim).values(at=local(date(2026, 12, 1), "09:00")))
    assert [f.problem for f in (await verified(store, "audit")).findings] == [Problem.ALTERED]


async def test_a_deleted_link_and_a_truncated_head_are_named(store: Store) -> None:
    await a_month_of_records(store)
    rc = record_chain.c
    await sql(store, record_chain.delete().where(rc.chain == "audit", rc.month == MONTH, rc.seq == 2))
    first = (await verified(store, "audit")).findings[0]
    assert (first.problem, first.seq) == (Problem.BROKEN, 3)
    # Cutting the tail, link and record together, leaves the head pointing past the end.
    last = await store.scalar(sa.select(sa.func.max(rc.seq)).where(rc.chain == "corrections"))
    ref = await store.scalar(sa.select(rc.ref).where(rc.chain == "corrections", rc.seq == last))
    await sql(store, record_chain.delete().where(rc.chain == "corrections", rc.seq == last))
    v = await verified(store, "corrections")
    assert [f.problem for f in v.findings] == [Problem.INSERTED, Problem.TRUNCATED], (ref, v.findings)


async def test_concurrent_writers_on_two_connections_make_one_unbroken_chain(store_url: str, store: Store) -> None:
    other = await Store.open(store_url)

    async def write(s: Store, who: str) -> None:
        for i in range(15):
            async with s.engine.begin() as conn:
                await audit(conn, at=local(date(2026, 11, 5), "10:00"), actor=who, action="x", target=f"t{i}")
            await asyncio.sleep(0)

    try:
        await asyncio.gather(write(store, "a"), write(store, "b"), write(other, "c"), write(other, "d"))
    finally:
        await other.close()
    v = await verified(store, "audit")
    assert v.ok and v.links == 60, v.findings


async def test_the_cli_prints_the_head_or_names_the_first_altered_row(
    store_url: str, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await a_month_of_records(store)
    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")

    async def cli(*args: str) -> int:  # the CLI runs its own event loop, as from a shell
        return await asyncio.to_thread(main, ["audit", "verify", *args, "--config", str(config)])

    assert await cli("--month", MONTH) == 0
    head = (await verified(store, "audit")).head
    out = capsys.readouterr().out
    assert head in out and "完好" in out
    await sql(store, audit_log.update().where(audit_log.c.action == "attendance.lock").values(actor="someone"))
    assert await cli("--month", MONTH, "--chain", "audit") == 1
    out = capsys.readouterr().out
    assert "altered" in out and "audit_log" in out and head not in out
    assert await cli("--month", "2026-13") == 1
    assert "YYYY-MM" in capsys.readouterr().err


async def test_the_migration_chains_the_records_written_before_it(store_url: str) -> None:
    """A centre upgraded from 0012: its existing audit rows are chained in time order and verify."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from broker.store.db import MIGRATIONS, create_engine, migrate

    def upgrade_to(revision: str) -> Callable[[sa.Connection], None]:
        def run(sync_conn: sa.Connection) -> None:
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        return run

    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to("0012"))
            for i in (3, 1, 2):  # written out of time order: the chain follows the time
                at = local(date(2026, 11, i), "10:00")
                await conn.execute(audit_log.insert().values(at=at, actor="op", action="x", target="t"))
        await migrate(engine)
        async with engine.connect() as conn:
            v = await verify(conn, "audit", MONTH)
        assert v.ok and v.links == 3, v.findings
    finally:
        await engine.dispose()
