"""``hallfleet audit verify --month YYYY-MM [--chain audit|corrections|events]``: recompute a month's chains and
re-verify its stored signed events.

Exit 0 with each chain's head (what that month's reports print) and the count of signed events re-verified when
every record is as it was chained or signed; exit 1 naming the first altered, deleted or inserted record (then
every other finding) when not.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.audit.signed_events import SOURCE as EVENTS
from broker.audit.signed_events import SignedVerdict, verify_signed_events
from broker.audit.sources import CHAINS
from broker.audit.verify import Finding, Verdict, verify
from broker.cli_support import run_with_store
from broker.sites import Sites
from broker.store.db import Store

CHAIN_ZH = {"audit": "审计日志", "corrections": "考勤更正", EVENTS: "设备签名事件"}


def add_verify(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help="prove a month's hash chains (audit log, attendance corrections) and re-verify its signed events "
        "(punches, ratings, faults ...); names the first altered row",
    )
    p.add_argument("--month", required=True, help="YYYY-MM, China Standard Time")
    p.add_argument("--chain", choices=(*CHAINS, EVENTS), default=None, help="one of them (default: all three)")
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.set_defaults(func=lambda a: run_with_store(a, _verify))


async def _verify(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    chains = (a.chain,) if a.chain else (*CHAINS, EVENTS)
    async with store.engine.connect() as conn:
        verdicts = [
            await verify_signed_events(conn, a.month) if c == EVENTS else await verify(conn, c, a.month) for c in chains
        ]
    for v in verdicts:
        print(_report_signed(v) if isinstance(v, SignedVerdict) else _report(v))
    return 0 if all(v.ok for v in verdicts) else 1


def _report(v: Verdict) -> str:
    name = f"{CHAIN_ZH[v.chain]} ({v.chain}) {v.month}"
    if v.ok:
        return f"{name}: 完好 / intact, {v.links} 条 / links, 链头 / head {v.head}"
    lines = _tampered(name, v.findings)
    lines.append(f"  按现存记录重算的链头 / head recomputed from the stored records: {v.recomputed}")
    return "\n".join(lines)


def _report_signed(v: SignedVerdict) -> str:
    name = f"{CHAIN_ZH[EVENTS]} ({EVENTS}) {v.month}"
    # What could not be re-checked is said every time, so "intact" never covers more than was verified.
    counts = (
        f"{v.verified} 条已按设备签名复核 / re-verified against the device's signature; "
        f"{v.unsigned} 条无签名 / unsigned, {v.not_kept} 条签名字节未留存 / signed before the bytes were kept "
        "(无法复核 / cannot be re-checked)"
    )
    if v.ok:
        return f"{name}: 完好 / intact, {counts}"
    return "\n".join([*_tampered(name, v.findings), f"  {counts}"])


def _tampered(name: str, findings: tuple[Finding, ...]) -> list[str]:
    first, *rest = findings
    return [
        f"{name}: 已被改动 / TAMPERED, 首个问题 / first: {first.describe()}",
        *(f"  另 / also: {f.describe()}" for f in rest),
    ]
