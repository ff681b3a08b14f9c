"""Device signatures at ingest: every signed event is verified against the bytes received, from keys in memory.

The rules: a signed event is stored only if its key is registered for that device, was neither rotated out
(``retired_at``) nor revoked (``revoked_at``) at the event's time, and the signature holds over the bytes the
device signed (protocol/signing.py); otherwise it is dead-lettered ``bad_signature`` with the reason first in
the detail (unknown_key, retired, revoked, mismatch). An unsigned critical event is refused as ``unsigned`` per
``ingest.require_signatures``. The keys are read from the store by ``KeyRefresh`` every few seconds, never per
message: a key pushed at provisioning counts from the next refresh. An event's time is the device's (settled)
``ts``: an offline device replays events signed before a rotation, and those still count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.store.db import Store
from broker.store.schema import device_keys
from protocol.envelope import Envelope
from protocol.events import Lane, lane_of
from protocol.signing import SignatureError, Signed, public_from_text, signed_part, verify

log = logging.getLogger(__name__)

Policy = Literal["registered", "all", "off"]


@dataclass(frozen=True, slots=True)
class DeviceSignKey:
    """A registered key as the store holds it."""

    key_id: str
    site: str
    device: str
    public: Ed25519PublicKey
    valid_from: datetime
    retired_at: datetime | None
    revoked_at: datetime | None

    def refusal(self, at: datetime) -> SignatureError | None:
        """Why an event of time ``at`` may not be signed by this key, if it may not."""
        if self.revoked_at is not None and at >= self.revoked_at:
            return SignatureError("revoked", f"key {self.key_id} was revoked at {self.revoked_at.isoformat()}")
        if self.retired_at is not None and at >= self.retired_at:
            return SignatureError("retired", f"key {self.key_id} was rotated out at {self.retired_at.isoformat()}")
        return None


@dataclass(slots=True)
class Signatures:
    """``check(env, raw) -> Signed | None`` (the key id, signature and the bytes it covers, which the store keeps
    so the event can be re-verified later); raises SignatureError for a refusal."""

    policy: Policy = "registered"
    _keys: dict[str, DeviceSignKey] = field(default_factory=dict)
    _keyed: frozenset[tuple[str, str]] = frozenset()
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def replace(self, keys: list[DeviceSignKey]) -> None:
        self._keys = {k.key_id: k for k in keys}
        self._keyed = frozenset((k.site, k.device) for k in keys)

    def check(self, env: Envelope, raw: bytes) -> Signed | None:
        sig = env.sig
        if sig is None:
            self._unsigned(env)
            return None
        key = self._keys.get(sig.kid)
        if key is None and self.policy != "all" and (env.site, env.device) not in self._keyed:
            # A device provisioned but whose keys the centre has not been told of yet (no `provision sync`): held
            # to the unsigned rule, as before it had a key, rather than its punches dead-lettered. The signature
            # is not kept: nothing vouches for it.
            self._unsigned_key_seen(env, sig.kid)
            return None
        if key is None:
            raise SignatureError("unknown_key", f"key {sig.kid} is not registered at the centre")
        if (key.site, key.device) != (env.site, env.device):
            raise SignatureError("mismatch", f"key {sig.kid} belongs to {key.site}/{key.device}")
        if (refused := key.refusal(env.ts)) is not None:
            raise refused
        signed = signed_part(raw, sig)
        verify(key.public, signed)
        return signed

    def _unsigned_key_seen(self, env: Envelope, kid: str) -> None:
        if (env.site, env.device) not in self._warned:
            self._warned.add((env.site, env.device))
            log.warning(
                "%s/%s signs with key %s the centre does not know: stored unverified until its keys are pushed "
                "(hallfleet provision sync)",
                env.site,
                env.device,
                kid,
            )

    def _unsigned(self, env: Envelope) -> None:
        if self.policy == "off" or lane_of(env.type) is not Lane.CRITICAL:
            return
        if self.policy == "all" or (env.site, env.device) in self._keyed:
            raise SignatureError("unsigned", f"critical {env.type} without a signature (ingest.require_signatures)")


async def load_keys(store: Store) -> list[DeviceSignKey]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(device_keys))).all()
    keys = []
    for r in rows:
        try:
            public = public_from_text(r.public_key)
        except ValueError as exc:  # one bad row costs that key (its events are dead-lettered), not the others
            log.error("device key %s of %s/%s is unreadable: %s", r.key_id, r.site, r.device, exc)
            continue
        keys.append(DeviceSignKey(r.key_id, r.site, r.device, public, r.valid_from, r.retired_at, r.revoked_at))
    return keys


@dataclass(slots=True)
class KeyRefresh:
    """The job that keeps ``Signatures`` following the store's ``device_keys`` (pushed by provisioning)."""

    store: Store
    signatures: Signatures
    interval_s: float
    name: str = "device-keys"

    async def run_once(self, now: datetime) -> None:
        self.signatures.replace(await load_keys(self.store))
