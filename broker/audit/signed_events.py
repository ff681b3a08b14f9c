"""Re-verification of a month's stored signed events: the punch, rating or fault as stored now must be what its
device signed.

Rule: nothing stored is trusted but the device's public key. Each signed event of the month keeps the exact
bytes its signature covers (``events.signed``, kept at ingest since migration 0016); the signature is checked
again over those bytes with the key the centre holds for that device, and the event those bytes say is compared
column by column with the stored row. Changing a stored column shows as ``altered`` naming the column; changing
the kept bytes as well shows as a signature that no longer holds. What cannot be re-checked is counted, not
passed over in silence: critical events that came unsigned (``ingest.require_signatures``) and signed events
stored before the bytes were kept.

A month is the events' own time (``ts``) in China Standard Time, as for the record chains; critical event types
only (protocol/events.py's lanes), so the scan runs on the ``events_type_ts`` index.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.verify import Finding, Problem, month_span
from broker.store.schema import device_keys, events
from protocol.envelope import Envelope, settle_clock
from protocol.events import REGISTRY, Frozen, Lane, typed_envelope
from protocol.signing import SignatureError, Signed, public_from_text, verify
from runtime.clock import HALL_ZONE

SOURCE = "events"
CRITICAL_TYPES = tuple(sorted(t for t, spec in REGISTRY.items() if spec.lane is Lane.CRITICAL))
# The stored columns an envelope sets, compared one by one (``replayed`` is transport, never signed).
_COMPARED = ("site", "device", "id", "type", "seq", "boot_id", "ts", "clock_synced")


@dataclass(frozen=True, slots=True)
class SignedVerdict:
    month: str
    verified: int  # signed events whose kept bytes were checked, findings or not
    unsigned: int  # critical events stored without a signature: nothing to re-check
    not_kept: int  # signed events stored before their bytes were kept: checked once, at ingest
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings


async def verify_signed_events(conn: AsyncConnection, month: str) -> SignedVerdict:
    """Every critical event of ``month`` re-verified against its device's signature (see the module's rule)."""
    start, end = month_span(month)
    keys = {r.key_id: r for r in (await conn.execute(sa.select(device_keys))).all()}
    e = events.c
    q = (
        sa.select(*(e[c] for c in (*_COMPARED, "received_at", "data", "sig_key", "sig", "signed")))
        .where(e.type.in_(CRITICAL_TYPES), e.ts >= start, e.ts < end)
        .order_by(e.ts, e.site, e.device, e.id)
    )
    verified = unsigned = not_kept = 0
    findings: list[Finding] = []
    async for row in await conn.stream(q):
        if row.sig is None:
            unsigned += 1
        elif row.signed is None:
            not_kept += 1
        else:
            verified += 1
            problem = _problem(row, keys)
            if problem is not None:
                ref = f"{row.site}/{row.device} {row.id} ({row.type}, {row.ts.astimezone(HALL_ZONE).isoformat()})"
                findings.append(Finding(Problem.ALTERED, SOURCE, ref, None, problem))
    return SignedVerdict(month, verified, unsigned, not_kept, tuple(findings))


def _problem(row: Any, keys: Mapping[str, Any]) -> str | None:
    """Why the stored row is not what its device signed, or None when it is."""
    key = keys.get(row.sig_key)
    if key is None:
        return f"its key {row.sig_key} is not registered at the centre (device_keys)"
    if (key.site, key.device) != (row.site, row.device):
        return f"its key {row.sig_key} belongs to {key.site}/{key.device}"
    message = row.signed.encode()
    try:
        verify(public_from_text(key.public_key), Signed(key.key_id, base64.b64decode(row.sig), message))
    except (SignatureError, ValueError):
        return "the signature does not hold over the kept bytes: they were changed"
    return _differs(row, message)


def _differs(row: Any, message: bytes) -> str | None:
    if row.type not in REGISTRY:
        return f"type now reads {row.type!r}, which no device sends"
    try:
        env: Envelope = typed_envelope(row.type).model_validate_json(message)
    except ValidationError:  # the signed bytes are of another type: the stored type was changed
        return f"type now reads {row.type!r}, the device signed another"
    env = settle_clock(env, row.received_at)  # as ingest stored it
    changed = [c for c in _COMPARED if getattr(env, c) != getattr(row, c)]
    if cast(Frozen, env.data).model_dump_json() != row.data:
        changed.append("data")
    if changed:
        return f"{', '.join(changed)} differ{'s' if len(changed) == 1 else ''} from what the device signed"
    return None
