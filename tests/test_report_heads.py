"""Monthly reports carry the month's chain heads (issue 24): the SLA workbook's summary and its CSV footer print
what ``hallfleet audit verify --month`` prints, and a record altered afterwards makes verify name it while the
printed head no longer matches the one the stored records give."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa

from broker.audit.heads import hash_of
from broker.audit.verify import verify
from broker.reports import build_sla_report, write_csv, write_xlsx
from broker.store.db import Store
from broker.store.schema import attendance_exceptions, audit_log
from hallfleet.cli import main
from tests.test_audit_chain import MONTH, SITES, a_month_of_records, sql
from tests.test_reports import AFTER


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    yield s
    await s.close()


LABELS = {"audit": "审计链校验值 2026-11", "corrections": "考勤更正链校验值 2026-11"}


async def cli_heads(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")
    rc = await asyncio.to_thread(main, ["audit", "verify", "--month", MONTH, "--config", str(config)])
    return rc, capsys.readouterr().out


def printed_in_xlsx(path: Path) -> dict[str, str]:
    ws = openpyxl.load_workbook(path)["汇总"]
    cells = {str(r[0].value): str(r[1].value) for r in ws.iter_rows(min_row=3) if r[0].value}
    return {chain: hash_of(cells[label]) for chain, label in LABELS.items()}


def printed_in_csv(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines = {r[0]: r[1] for r in csv.reader(f) if len(r) == 2}
    return {chain: hash_of(lines[label]) for chain, label in LABELS.items()}


async def recomputed(store: Store, chain: str) -> tuple[bool, str, str]:
    async with store.engine.connect() as conn:
        v = await verify(conn, chain, MONTH)
    return v.ok, v.recomputed, "\n".join(f.describe() for f in v.findings)


async def test_the_sla_report_prints_the_heads_verify_prints_and_they_expose_a_later_alteration(
    store_url: str, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await a_month_of_records(store)
    report = await build_sla_report(store, SITES, "qp", MONTH, now=AFTER)
    write_xlsx(report, tmp_path / "sla.xlsx")
    write_csv(report, tmp_path / "sla.csv")
    xlsx, csv_ = printed_in_xlsx(tmp_path / "sla.xlsx"), printed_in_csv(tmp_path / "sla.csv")
    rc, out = await cli_heads(store_url, tmp_path, capsys)
    assert rc == 0 and xlsx == csv_
    for chain, head in xlsx.items():
        assert f"({chain}) {MONTH}: 完好" in out and f"链头 / head {head}" in out, (chain, out)
        assert (await recomputed(store, chain))[1] == head

    await sql(store, audit_log.update().where(audit_log.c.action == "attendance.lock").values(actor="someone"))
    await sql(store, attendance_exceptions.update().where(attendance_exceptions.c.kind == "leave").values(minutes=1))
    for chain, source in (("audit", "audit_log"), ("corrections", "attendance_exception")):
        ok, now_head, findings = await recomputed(store, chain)
        assert not ok and findings.startswith("altered") and source in findings
        assert now_head != xlsx[chain]
    rc, out = await cli_heads(store_url, tmp_path, capsys)
    assert rc == 1 and out.count("已被改动 / TAMPERED") == 2


async def test_a_report_made_from_tampered_records_prints_no_head(store: Store, tmp_path: Path) -> None:
    await a_month_of_records(store)
    await sql(store, audit_log.update().where(audit_log.c.action == "attendance.lock").values(reason="改"))
    report = await build_sla_report(store, SITES, "qp", MONTH, now=AFTER)
    write_xlsx(report, tmp_path / "sla.xlsx")
    ws = openpyxl.load_workbook(tmp_path / "sla.xlsx")["汇总"]
    cells = {str(r[0].value): str(r[1].value) for r in ws.iter_rows(min_row=3) if r[0].value}
    assert cells[LABELS["audit"]].startswith("已被改动: hallfleet audit verify --month 2026-11")
    assert not cells[LABELS["corrections"]].startswith("已被改动")
    assert (await recomputed(store, "corrections"))[0]


# -- every other monthly workbook and CSV (one helper, broker/reports/sheets.py with_heads) -----------------
async def _attendance(store: Store, d: Path) -> tuple[Path, Path]:
    from broker.attendance.reports import monthly_by_unit
    from broker.attendance.reports import write_csv as write_att_csv
    from broker.attendance.reports import write_xlsx as write_att_xlsx
    from broker.attendance.service import load_period
    from broker.audit.heads import month_heads

    p = await load_period(store, SITES, "qp", date(2026, 11, 1), date(2026, 11, 30), now=AFTER)
    monthly = monthly_by_unit(p.days, p.members, SITES["qp"].attendance.monthly, MONTH, site_name=p.site_name)
    async with store.engine.connect() as conn:
        heads = await month_heads(conn, MONTH)
    write_att_xlsx([monthly], d / "att.xlsx", "zh-CN", heads)
    write_att_csv(monthly, d / "att.csv", "zh-CN", heads)
    return d / "att.xlsx", d / "att.csv"


async def _ratings(store: Store, d: Path) -> tuple[Path, Path]:
    from broker.ratings.report import build_report, write_csv, write_xlsx

    report = await build_report(store, SITES, "qp", MONTH, now=AFTER)
    write_xlsx(report, d / "r.xlsx")
    write_csv(report, d / "r.csv")
    return d / "r.xlsx", d / "r.csv"


async def _queue(store: Store, d: Path) -> tuple[Path, Path]:
    from broker.queueing.report import build_report, write_report

    report = await build_report(store, SITES, "qp", MONTH)
    write_report(report, d / "q.xlsx", SITES)
    write_report(report, d / "q.csv", SITES)
    return d / "q.xlsx", d / "q.csv"


async def _duties(store: Store, d: Path) -> tuple[Path, Path]:
    from broker.duties.report import build_report, load_month, write_report

    report = build_report(await load_month(store, SITES, "qp", MONTH, AFTER))
    write_report(report, d / "d.xlsx", SITES)
    write_report(report, d / "d.csv", SITES)
    return d / "d.xlsx", d / "d.csv"


KINDS = {"attendance": (_attendance, "汇总"), "ratings": (_ratings, "达标情况"), "queue": (_queue, "汇总"),
         "duties": (_duties, "汇总")}  # fmt: skip


def heads_in_sheet(path: Path, sheet: str) -> dict[str, str]:
    ws = openpyxl.load_workbook(path)[sheet]
    cells = {str(r[0].value): str(r[1].value) for r in ws.iter_rows(min_row=3) if r[0].value}
    return {chain: cells[label] for chain, label in LABELS.items()}


@pytest.mark.parametrize("kind", KINDS)
async def test_each_monthly_report_prints_the_heads_verify_prints(
    kind: str, store_url: str, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await a_month_of_records(store)
    make, sheet = KINDS[kind]
    xlsx_path, csv_path = await make(store, tmp_path)
    xlsx = {c: hash_of(v) for c, v in heads_in_sheet(xlsx_path, sheet).items()}
    assert xlsx == printed_in_csv(csv_path)
    rc, out = await cli_heads(store_url, tmp_path, capsys)
    assert rc == 0
    for chain, head in xlsx.items():
        assert len(head) == 64 and f"链头 / head {head}" in out, (kind, chain, out)

    await sql(store, attendance_exceptions.update().where(attendance_exceptions.c.kind == "leave").values(minutes=1))
    ok, now_head, findings = await recomputed(store, "corrections")
    assert not ok and "attendance_exception" in findings and now_head != xlsx["corrections"]
    assert (await recomputed(store, "audit"))[1] == xlsx["audit"]
    xlsx_path, _ = await make(store, tmp_path)  # made again from the altered records: no head vouches for them
    again = heads_in_sheet(xlsx_path, sheet)
    assert again["corrections"].startswith("已被改动") and hash_of(again["audit"]) == xlsx["audit"]


async def test_a_consistent_rewrite_passes_verify_but_not_the_printed_report(
    store_url: str, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limit verify cannot see: rows, links and head rewritten together. The report printed before shows it."""
    await a_month_of_records(store)
    printed = heads_in_sheet((await _duties(store, tmp_path))[0], "汇总")
    await sql(store, audit_log.update().where(audit_log.c.action == "attendance.lock").values(actor="someone"))
    await rechain(store, "audit")
    rc, out = await cli_heads(store_url, tmp_path, capsys)
    assert rc == 0 and out.count("完好") == 3, out  # verify alone is satisfied (both chains, no signed event)
    ok, now_head, _ = await recomputed(store, "audit")
    assert ok and f"链头 / head {now_head}" in out
    assert now_head != hash_of(printed["audit"])  # the signed report is what catches it
    assert (await recomputed(store, "corrections"))[1] == hash_of(printed["corrections"])


async def rechain(store: Store, chain_name: str) -> None:
    """What a forger with write access does: recompute every link of the month and the stored head from the rows
    as they now are (broker/audit/chain.py's own link function)."""
    from broker.audit import chain
    from broker.audit.verify import BY_NAME, _records, month_span, of_chain
    from broker.store.schema import record_chain, record_chain_heads

    rc, hc = record_chain.c, record_chain_heads.c
    async with store.engine.begin() as conn:
        rows = {s.name: await _records(conn, s, month_span(MONTH)) for s in of_chain(chain_name)}
        q = sa.select(record_chain).where(rc.chain == chain_name, rc.month == MONTH).order_by(rc.seq)
        prev = chain.genesis(chain_name, MONTH)
        for lk in (await conn.execute(q)).all():
            h = chain.link(prev, BY_NAME[lk.source], rows[lk.source][lk.ref])
            where = (rc.chain == chain_name, rc.month == MONTH, rc.seq == lk.seq)
            await conn.execute(record_chain.update().where(*where).values(prev_hash=prev, hash=h))
            prev = h
        await conn.execute(
            record_chain_heads.update().where(hc.chain == chain_name, hc.month == MONTH).values(hash=prev)
        )
