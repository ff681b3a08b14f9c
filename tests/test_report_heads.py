"""Monthly reports carry the month's chain heads (issue 24): the SLA workbook's summary and its CSV footer print
what ``hallfleet audit verify --month`` prints, and a record altered afterwards makes verify name it while the
printed head no longer matches the one the stored records give."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from pathlib import Path

import openpyxl
import pytest

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
