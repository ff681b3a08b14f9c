"""Verification of a month's chain: every link recomputed from the record as it is stored now.

Rule: nothing stored is trusted. A link's hash is recomputed from the current row and the previous link's
recomputed hash, so an altered row, a link removed or slipped in, a record deleted, a record inserted without
a link and a chain cut short each show as a finding naming the row; the first finding in chain order is
the one a reviewer starts from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit import chain
from broker.audit.sources import BY_NAME, Source, of_chain
from broker.store.schema import record_chain
from runtime.clock import HALL_ZONE


class Problem(StrEnum):
    ALTERED = "altered"  # the record's content is not what was chained
    DELETED = "deleted"  # a chained record is gone
    INSERTED = "inserted"  # a record of the month that no link covers
    BROKEN = "broken"  # links removed, inserted or re-ordered (seq or prev_hash do not follow)
    TRUNCATED = "truncated"  # the stored head is not the last link


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    source: str
    ref: str
    seq: int | None
    detail: str

    def describe(self) -> str:
        at = f"第 {self.seq} 环 / link {self.seq}, " if self.seq is not None else ""
        return f"{self.problem.value}: {at}{self.source} {self.ref}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Verdict:
    chain: str
    month: str
    links: int
    head: str  # the recomputed head (genesis for an empty month)
    findings: tuple[Finding, ...]
    # The head the records as stored now give, every link recomputed from its recomputed predecessor: equals
    # ``head`` when intact; differs from a head printed on a report once any chained record was altered.
    recomputed: str = ""

    @property
    def ok(self) -> bool:
        return not self.findings


def month_span(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of ``YYYY-MM`` in China Standard Time."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=HALL_ZONE)
    except ValueError:
        raise ValueError(f"月份 {month!r} 格式应为 YYYY-MM, 如 2026-11 / month must be YYYY-MM") from None
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, nxt


async def verify(conn: AsyncConnection, chain_name: str, month: str) -> Verdict:
    if chain_name not in {"audit", "corrections"}:
        raise ValueError(f"未知的链 {chain_name!r}: audit 或 corrections / unknown chain")
    span = month_span(month)
    rows = {s.name: await _records(conn, s, span) for s in of_chain(chain_name)}
    rc = record_chain.c
    q = sa.select(record_chain).where(rc.chain == chain_name, rc.month == month).order_by(rc.seq)
    links = (await conn.execute(q)).all()
    findings: list[Finding] = []
    prev, covered = chain.genesis(chain_name, month), set()
    fresh = prev
    for expected_seq, lk in enumerate(links, start=1):
        covered.add((lk.source, lk.ref))
        findings += _linkage(lk, expected_seq, prev)
        source = BY_NAME.get(lk.source)
        row = rows.get(lk.source, {}).get(lk.ref) if source else None
        if source is None:
            findings.append(Finding(Problem.BROKEN, lk.source, lk.ref, lk.seq, "unknown source in a link"))
        elif row is None:
            findings.append(await _missing(conn, source, lk))
        else:
            recomputed = chain.link(prev, source, row)
            fresh = chain.link(fresh, source, row)
            if recomputed != lk.hash:
                findings.append(Finding(Problem.ALTERED, lk.source, lk.ref, lk.seq, "content differs from its hash"))
        prev = lk.hash  # the next link is judged against the stored hash: one alteration, one finding
    findings += _unlinked(rows, covered)
    stored = await chain.head(conn, chain_name, month)
    if (stored.seq, stored.hash) != (len(links), prev):
        said = f"head says link {stored.seq} {stored.hash[:12]}…, last link is {len(links)}"
        findings.append(Finding(Problem.TRUNCATED, "record_chain_heads", month, stored.seq, said))
    findings.sort(key=lambda f: f.seq if f.seq is not None else len(links) + 1)
    return Verdict(chain_name, month, len(links), prev, tuple(findings), fresh)


def _linkage(lk: Any, expected_seq: int, prev: str) -> list[Finding]:
    if lk.seq != expected_seq:
        return [Finding(Problem.BROKEN, lk.source, lk.ref, lk.seq, f"link {expected_seq} is missing")]
    if lk.prev_hash != prev:
        return [Finding(Problem.BROKEN, lk.source, lk.ref, lk.seq, "prev_hash does not follow the link before")]
    return []


async def _records(conn: AsyncConnection, s: Source, span: tuple[datetime, datetime]) -> dict[str, Mapping[Any, Any]]:
    t = s.table.c[s.time]
    names = tuple(dict.fromkeys(s.columns + s.key))
    q = sa.select(*s.cols(names)).where(s.present(), t >= span[0], t < span[1])
    return {chain.ref_of(s, r): r for r in (await conn.execute(q)).mappings()}


async def _missing(conn: AsyncConnection, s: Source, lk: Any) -> Finding:
    """A linked record not among the month's: moved out of the month by an altered time, or gone."""
    key = dict(zip(s.key, json.loads(lk.ref), strict=True))
    where = [s.table.c[k] == _typed(s, k, v) for k, v in key.items()]
    found = (await conn.execute(sa.select(s.table.c[s.time]).where(*where))).first()
    if found is not None and found[0] is not None:
        return Finding(Problem.ALTERED, lk.source, lk.ref, lk.seq, f"its time now reads {found[0].isoformat()}")
    return Finding(Problem.DELETED, lk.source, lk.ref, lk.seq, "the chained record is gone")


def _typed(s: Source, column: str, value: Any) -> Any:
    # Keys are text, integers or dates; JSON kept the first two as they were.
    if isinstance(value, str) and s.table.c[column].type.python_type is date:
        return date.fromisoformat(value)
    return value


def _unlinked(rows: dict[str, dict[str, Mapping[Any, Any]]], covered: set[tuple[str, str]]) -> list[Finding]:
    return [
        Finding(Problem.INSERTED, name, ref, None, "no link covers this record")
        for name, by_ref in rows.items()
        for ref in sorted(by_ref)
        if (name, ref) not in covered
    ]
