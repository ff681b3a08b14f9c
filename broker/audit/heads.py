"""The month's chain heads as a report prints them: the one function every monthly report calls, so a signed
workbook or CSV carries exactly what ``hallfleet audit verify --month`` prints for that month.

Rule: a head is printed only when the chain verifies at the moment the report is made. A report never vouches
for records already altered: then it prints that the chain is tampered and to run ``hallfleet audit verify``.
Kept outside the database (on a signed PDF/XLSX), the printed head is what catches a rewrite that verify alone
cannot see: rows, links and head all rewritten consistently give a different head.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.sources import CHAINS
from broker.audit.verify import verify

# Labels of the rows, zh-CN first; the chain names match ``hallfleet audit verify``'s.
LABELS = {
    "zh-CN": {"audit": "审计链校验值", "corrections": "考勤更正链校验值", "links": "条", "tampered": "已被改动"},
    "en": {"audit": "Audit chain head", "corrections": "Attendance corrections chain head", "links": "links",
           "tampered": "TAMPERED"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChainHead:
    chain: str
    month: str
    links: int
    hash: str | None  # None: the chain did not verify when the report was made


@dataclass(frozen=True, slots=True)
class MonthHeads:
    month: str
    heads: tuple[ChainHead, ...]

    def items(self, lang: str = "zh-CN") -> list[tuple[str, str]]:
        """(label, value) rows for a summary sheet: the value is the hash verify prints, then the link count."""
        w = LABELS.get(lang, LABELS["zh-CN"])
        return [(f"{w[h.chain]} {h.month}", _value(h, w)) for h in self.heads]

    def footer(self, lang: str = "zh-CN") -> list[list[str]]:
        """CSV footer lines: the same rows as the summary sheet."""
        return [[label, value] for label, value in self.items(lang)]


def _value(h: ChainHead, w: dict[str, str]) -> str:
    if h.hash is None:
        return f"{w['tampered']}: hallfleet audit verify --month {h.month}"
    return f"{h.hash} ({h.links} {w['links']})"


def hash_of(value: str) -> str:
    """The hash in a printed head value (what a reviewer compares with verify's 链头 / head)."""
    return value.split(" ", 1)[0]


async def month_heads(conn: AsyncConnection, month: str) -> MonthHeads:
    """Verify each chain of ``month`` (YYYY-MM, China Standard Time) and return its head for printing."""
    verdicts = [await verify(conn, c, month) for c in CHAINS]
    return MonthHeads(month, tuple(ChainHead(v.chain, month, v.links, v.head if v.ok else None) for v in verdicts))
