"""What every centre CLI command does around its work: read the centre's config, open the store (with the
incident rules, which some actions apply), run, close, and turn a refusal into a message and exit 1."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from broker.config import ConsumerConfig
from broker.sites import Sites
from broker.store.db import Store
from runtime.settings import load_settings

Handler = Callable[[argparse.Namespace, Store, Sites], Awaitable[int]]
REPORT_SUFFIXES = (".csv", ".xlsx")


def run_with_store(a: argparse.Namespace, handler: Handler, refusals: tuple[type[Exception], ...] = ()) -> int:
    """Run ``handler`` on the store named by ``--config``. Errors the user can fix (``refusals``, bad
    input, unreadable files) print ``hallfleet: <why>`` and exit 1; a report to an unknown format exits 2."""
    out = getattr(a, "out", None)
    if out is not None and out.suffix.lower() not in REPORT_SUFFIXES:
        print("hallfleet: --out must end in .csv or .xlsx", file=sys.stderr)
        return 2
    cfg = load_settings(ConsumerConfig, a.config)

    async def go() -> int:
        store = await Store.open(cfg.store.url)
        sites = Sites(cfg.sites)
        try:
            return await handler(a, store, sites)
        finally:
            await store.close()

    expected: tuple[type[Exception], ...] = (*refusals, OSError, ValueError)
    try:
        return asyncio.run(go())
    except expected as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1
