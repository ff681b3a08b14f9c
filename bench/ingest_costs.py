"""Two same-run comparisons for bench/ingest.py: what the store's refusals cost, and what signatures cost.

The rule: each comparison drains the same backlog through the same code (``run_drain`` with a ``Backlog``), its
variants interleaved run by run (A B A B ...), so a drift in the machine's load falls on all of them alike, and
nothing is reported that did not add up: every drain is checked event by event (``accounting``) and a mismatch
is printed at once and again in the report.

- Issue 16, ``--poison-permille 1,10``: the consumer's commit stage splits a refused batch until only the
  offenders remain (broker/ingest/isolation.py), each dead-lettered ``store_rejected``. The store refuses any punch
  whose data mentions the marker (tests/support/refusal.py: a CHECK constraint on PostgreSQL, a trigger on SQLite)
  in every run, the clean one included, so the runs differ only in the poisoned punches.
- Issue 24, ``--signed``: unsigned punches from devices without keys vs the same punches signed (before timing)
  by devices whose keys are registered at the centre, so the consumer verifies each; beside them, the Ed25519
  sign and verify costs per event from a tight loop over protocol/signing.py's own functions.
"""

from __future__ import annotations

import datetime as dt
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa

from bench.ingest import (
    PLAIN,
    REJECTED,
    SITE,
    Backlog,
    Ctx,
    _f,
    device_signer,
    envelope_bytes,
    interleaved,
    run_drain,
)
from broker.config import IngestConfig
from broker.ingest.isolation import commit_isolated
from protocol.envelope import Envelope
from protocol.signing import key_id, public_to_text, signed_part, verify
from tests.support.refusal import POISON, refuse

# The tight loops: best of ROUNDS rounds of CALLS calls, in CPU time (process_time): on a shared machine a loop's
# wall time counts the other work's turns on the core too (twice the CPU time, seen at a load of 8 on 2 cores).
ROUNDS, CALLS = 5, 1_000


async def run_comparisons(ctx: Ctx, backend: str) -> dict[str, Any]:
    """The comparisons asked for on the command line, for one backend (none by default)."""
    a, out = ctx.args, {}
    drain = partial(run_drain, ctx, backend)
    if a.poison_permille:
        if "isolated_us" not in ctx.micro:
            ctx.micro |= await isolation_happy_path_us(IngestConfig().batch_size)
        runs = {"clean": Backlog(refusing=True)}
        runs |= {f"{p} ‰": Backlog(refusing=True, poison_permille=p) for p in a.poison_permille}
        print(f"[{backend}] isolation: clean vs {', '.join(list(runs)[1:])} poisoned ...", flush=True)
        out["isolation"] = await interleaved(ctx, "isolation", {k: partial(drain, b) for k, b in runs.items()})
    if a.signed:
        if "sign_us" not in ctx.micro:
            ctx.micro |= ed25519_us()
        print(f"[{backend}] signatures: unsigned vs signed and verified ...", flush=True)
        runs = {"unsigned": PLAIN, "signed": Backlog(signed=True)}
        out["signing"] = await interleaved(ctx, "signatures", {k: partial(drain, b) for k, b in runs.items()})
    return out


# -- the store a backlog needs ---------------------------------------------------------------------------
async def prepare_store(url: str, backlog: Backlog, devices: list[str]) -> None:
    """Install in the consumer's (migrated) store what ``backlog`` needs: the refusal, the devices' public keys
    (as ``hallfleet provision sync`` would push them)."""
    if not (backlog.refusing or backlog.signed):
        return
    from broker.store.db import create_engine
    from broker.store.schema import device_keys, events

    engine = create_engine(url)
    try:
        if backlog.refusing:
            await refuse(engine, events, "data")
        if backlog.signed:
            async with engine.begin() as conn:
                await conn.execute(sa.insert(device_keys), key_rows(devices))
    finally:
        await engine.dispose()


def key_rows(devices: Sequence[str]) -> list[dict[str, Any]]:
    """The device_keys rows of the bench devices' keys, valid since yesterday, neither rotated out nor revoked."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    rows = []
    for device in devices:
        public = device_signer(device).key.public_key()
        key = {"key_id": key_id(public), "public_key": public_to_text(public)}
        rows.append(
            {**key, "site": SITE, "device": device, "valid_from": since, "retired_at": None, "revoked_at": None}
        )
    return rows


# -- in-process figures ----------------------------------------------------------------------------------
def ed25519_us() -> dict[str, float]:
    """Per event, CPU µs: the device's ``Signer.sign`` and the centre's ``signed_part`` + ``verify`` (what
    broker/ingest/signatures.py runs per signed event past its key lookups), on a bench punch."""
    signer = device_signer("att-0000")
    raw = envelope_bytes(SITE, "att-0000", 1, "0123456789abcdef", dt.datetime.now(dt.UTC))
    signed = signer.sign(raw)
    sig = Envelope.model_validate_json(signed).sig
    assert sig is not None, "the signed punch parsed without its signature"
    public = signer.key.public_key()
    return {
        "sign_us": _best_us(lambda: signer.sign(raw)),
        "verify_us": _best_us(lambda: verify(public, signed_part(signed, sig))),
        "unsigned_bytes": len(raw),
        "signed_bytes": len(signed),
    }


def _best_us(call: Callable[[], object]) -> float:
    return min(timeit.repeat(call, timer=time.process_time, number=CALLS, repeat=ROUNDS)) / CALLS * 1e6


async def isolation_happy_path_us(batch: int) -> dict[str, float]:
    """A batch of ``batch`` items through ``commit_isolated`` with nothing refused (one write) against the same
    write called directly, CPU µs per batch with a write that does nothing: what every clean batch pays for the
    isolation, without a store's noise around it."""
    items = list(range(batch))

    async def write(_items: Sequence[int]) -> None:
        return None

    async def never(exc: BaseException) -> None:
        raise AssertionError(f"a write that does nothing failed: {exc!r}")

    async def best(call: Callable[[], Any]) -> float:
        rounds = []
        for _ in range(ROUNDS):
            t = time.process_time()
            for _ in range(CALLS):
                await call()
            rounds.append((time.process_time() - t) / CALLS * 1e6)
        return min(rounds)

    direct = await best(lambda: write(items))
    isolated = await best(lambda: commit_isolated(items, write, never))
    return {"direct_us": direct, "isolated_us": isolated, "batch": batch}


# -- report ----------------------------------------------------------------------------------------------
def render(ctx: Ctx, results: list[dict[str, Any]]) -> list[str]:
    lines = []
    if any("isolation" in r for r in results):
        lines += _render_isolation(ctx, results)
    if any("signing" in r for r in results):
        lines += _render_signing(ctx, results)
    return lines


def _runs(fig: dict[str, Any]) -> str:
    return f"{_f(fig['stored_s'])} [{', '.join(_f(r['stored_s']) for r in fig['each'])}]"


def _render_isolation(ctx: Ctx, results: list[dict[str, Any]]) -> list[str]:
    m = ctx.micro
    lines = [
        "",
        f"### Cost of the isolation (issue 16): clean vs poisoned drains, interleaved, medians of {ctx.args.repeats}",
        "",
        f"{ctx.args.events:,} punches queued, then drained. In every run the store refuses a punch whose data "
        f"mentions `{POISON}` (tests/support/refusal.py: CHECK constraint on PostgreSQL, trigger on SQLite); the "
        "poisoned punches are valid on the wire, spread evenly over the backlog.",
        "",
        "| backend | poisoned | poisoned events | stored events/s [each run] | CPU s / 100k | "
        f"`{REJECTED}` dead letters (each run) | stored events/s vs clean | CPU vs clean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if "isolation" in r):
        clean = r["isolation"]["clean"]
        for name, fig in _figures(r["isolation"]):
            dead = ", ".join(f"{x['rejected']:,}" for x in fig["each"])
            lines.append(
                f"| {r['backend']} | {name} | {fig['poisoned']:,.0f} | {_runs(fig)} | {_f(fig['cpu_per_100k'], '.2f')} "
                f"| {dead} | {_f(fig['stored_s'] / clean['stored_s'], '.2f')} | "
                f"{_f(fig['cpu_per_100k'] / clean['cpu_per_100k'], '.2f')} |"
            )
    lines += [
        "",
        "- stored events/s: events stored / (connected -> every event stored or dead-lettered); CPU: the consumer's "
        "over the same window, per 100,000 events drained.",
        "- the happy path: `commit_isolated` with nothing refused (one write) costs "
        f"{_f(m['isolated_us'], '.1f')} CPU µs per batch of {m['batch']:,} against {_f(m['direct_us'], '.1f')} "
        "for calling the same write directly (a write that does nothing, in-process, best of "
        f"{ROUNDS} x {CALLS:,}). The clean drain beside issue 19's consumer drain (same code, no refusal "
        "installed; not interleaved): "
        + ", ".join(
            f"{_f(r['isolation']['clean']['events_s'] / r['drain']['events_s'], '.2f')} ({r['backend']})"
            for r in results
            if "isolation" in r
        )
        + ": the refusal's own cost (a LIKE per row) plus the noise between runs minutes apart.",
    ]
    return lines + _accounting_and_load(results, "isolation")


def _render_signing(ctx: Ctx, results: list[dict[str, Any]]) -> list[str]:
    m = ctx.micro
    lines = [
        "",
        "### Cost of signatures (issue 24): unsigned vs signed and verified, interleaved, "
        f"medians of {ctx.args.repeats}",
        "",
        f"{ctx.args.events:,} punches queued, then drained: unsigned from devices without keys, or signed (before "
        "timing) by devices whose keys are registered at the centre, so the consumer verifies each.",
        "",
        "| backend | unsigned events/s [each run] | signed events/s [each run] | signed / unsigned "
        "| CPU s / 100k unsigned | signed | extra consumer CPU µs per event |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if "signing" in r):
        plain, signed = r["signing"]["unsigned"], r["signing"]["signed"]
        extra_us = (signed["cpu_per_100k"] - plain["cpu_per_100k"]) * 10  # s per 100k events -> µs per event
        lines.append(
            f"| {r['backend']} | {_runs(plain)} | {_runs(signed)} | "
            f"{_f(signed['stored_s'] / plain['stored_s'], '.2f')} | {_f(plain['cpu_per_100k'], '.2f')} | "
            f"{_f(signed['cpu_per_100k'], '.2f')} | {_f(extra_us, '.1f')} |"
        )
    lines += [
        "",
        f"- a punch is {m['unsigned_bytes']:.0f} bytes unsigned, {m['signed_bytes']:.0f} signed.",
        f"- Ed25519 in a tight loop (protocol/signing.py, this process, best of {ROUNDS} x {CALLS:,}): "
        f"`Signer.sign` {_f(m['sign_us'], '.1f')} CPU µs per event (the device's cost), `signed_part` + `verify` "
        f"{_f(m['verify_us'], '.1f')} CPU µs per event (the centre's, past its key lookup; compare the last column).",
    ]
    return lines + _accounting_and_load(results, "signing")


def _figures(comparison: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, fig) for name, fig in comparison.items() if name != "load"]


def _accounting_and_load(results: list[dict[str, Any]], key: str) -> list[str]:
    """Every run's mismatch, loudly (or that all added up), and the load average after each backend's runs."""
    bad = [
        f"- **MISMATCH** {r['backend']} {name}, run {i + 1}: {run['mismatch']}"
        for r in results
        if key in r
        for name, fig in _figures(r[key])
        for i, run in enumerate(fig["each"])
        if run["mismatch"]
    ]
    ok = "- every run added up: all events stored but the poisoned, each of those one dead letter (store and "
    ok += "consumer counter), no other dead letter, every signed event stored with its verified signature."
    loads = ", ".join(f"{' '.join(f'{x:.2f}' for x in r[key]['load'])} ({r['backend']})" for r in results if key in r)
    return [*(bad or [ok]), f"- load average 1/5/15 min after these runs: {loads}."]
