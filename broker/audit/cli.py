"""``hallfleet audit verify --month YYYY-MM [--chain audit|corrections]``: recompute a month's chains.

Exit 0 with each chain's head (what that month's reports print) when every record is as it was chained;
exit 1 naming the first altered, deleted or inserted record (then every other finding) when not.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.audit.sources import CHAINS
from broker.audit.verify import Verdict, verify
from broker.cli_support import run_with_store
from broker.sites import Sites
from broker.store.db import Store

CHAIN_ZH = {"audit": "审计日志", "corrections": "考勤更正"}


def add_verify(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify", help="prove a month's hash chains (audit log, attendance corrections); names the first altered row"
    )
    p.add_argument("--month", required=True, help="YYYY-MM, China Standard Time")
    p.add_argument("--chain", choices=CHAINS, default=None, help="one chain (default: both)")
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.set_defaults(func=lambda a: run_with_store(a, _verify))


async def _verify(a: argparse.Namespace, store: Store, _sites: Sites) -> int:
    chains = (a.chain,) if a.chain else CHAINS
    async with store.engine.connect() as conn:
        verdicts = [await verify(conn, c, a.month) for c in chains]
    for v in verdicts:
        print(_report(v))
    return 0 if all(v.ok for v in verdicts) else 1


def _report(v: Verdict) -> str:
    name = f"{CHAIN_ZH[v.chain]} ({v.chain}) {v.month}"
    if v.ok:
        return f"{name}: 完好 / intact, {v.links} 条 / links, 链头 / head {v.head}"
    first, *rest = v.findings
    lines = [f"{name}: 已被改动 / TAMPERED, 首个问题 / first: {first.describe()}"]
    lines += [f"  另 / also: {f.describe()}" for f in rest]
    lines.append(f"  按现存记录重算的链头 / head recomputed from the stored records: {v.recomputed}")
    return "\n".join(lines)
