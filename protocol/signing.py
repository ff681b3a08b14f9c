"""Device signatures: a critical event carries an Ed25519 signature the centre checks against the bytes it received.

The rule: what is signed is the envelope's JSON exactly as the agent encodes it (``encode_event``), without
``sig`` and with ``replayed`` false; the signature travels as the envelope's last field. The centre never
re-serialises to verify: it cuts the ``sig`` suffix off the received bytes, closes the object, and (for an event
re-sent after an outage) flips the one top-level ``"replayed":true`` back. ``replayed`` is therefore transport
metadata, not signed; everything else (ids, seq, ts, type, the payload) is. Key ids and signatures have fixed,
small alphabets and lengths (``Signature``), so the suffix is recognised by one anchored match.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.envelope import MAX_EVENT_BYTES, Signature
from protocol.events import ContractError

SIGN_KEY_CREDENTIAL = "sign-key"
"""The signing key's LoadCredential= name (the provisioning bundle's credential file)."""

# The suffix the agent appends: ,"sig":{"kid":"<16 hex>","s":"<88 base64>"}} (pydantic's compact JSON).
_SUFFIX = re.compile(rb',"sig":\{"kid":"([0-9a-f]{16})","s":"([A-Za-z0-9+/]{86}==)"\}\}\Z')
# The top-level replayed flag: a JSON string never holds an unescaped quote, so `,"replayed":` followed by
# `,"data":` is the envelope's own field, written before data (field order), never a payload's text.
_REPLAYED = b',"replayed":true,"data":'
_NOT_REPLAYED = b',"replayed":false,"data":'


class SignatureError(Exception):
    """A signature that does not hold; ``reason`` is short and stable (the dead letter's detail starts with it)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def key_id(public: Ed25519PublicKey) -> str:
    """A key's id: the first 8 bytes of SHA-256 of its raw public bytes, hex (the same on device and centre)."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def private_to_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes_raw()).decode()


def private_from_text(text: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ValueError(f"not an Ed25519 private key in base64 (32 bytes): {exc}") from None


def public_to_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes_raw()).decode()


def public_from_text(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ValueError(f"not an Ed25519 public key in base64 (32 bytes): {exc}") from None


@dataclass(frozen=True, slots=True)
class Signer:
    """A device's signing key, loaded once from its credential file."""

    key: Ed25519PrivateKey
    kid: str

    @classmethod
    def from_text(cls, text: str) -> Signer:
        key = private_from_text(text)
        return cls(key, key_id(key.public_key()))

    def sign(self, raw: bytes) -> bytes:
        """``raw`` as ``encode_event`` made it (no sig, replayed false), with the signature appended."""
        if not raw.endswith(b"}") or _SUFFIX.search(raw) or _NOT_REPLAYED not in raw:
            raise ValueError("sign only an unsigned, not replayed envelope as encode_event wrote it")
        s = base64.b64encode(self.key.sign(raw)).decode()
        signed = raw[:-1] + b',"sig":{"kid":"' + self.kid.encode() + b'","s":"' + s.encode() + b'"}}'
        if len(signed) > MAX_EVENT_BYTES:
            raise ContractError(f"signed event of {len(signed)} bytes > {MAX_EVENT_BYTES}: the centre would refuse it")
        return signed


@dataclass(frozen=True, slots=True)
class Signed:
    """What a received event's signature claims: the key, the signature, and the bytes it covers."""

    kid: str
    signature: bytes
    message: bytes


def signed_part(raw: bytes, sig: Signature) -> Signed:
    """The signed bytes of a received envelope whose parse found ``sig`` (raises SignatureError if the
    signature is not the envelope's last field as an agent writes it, or disagrees with the parse)."""
    m = _SUFFIX.search(raw)
    if m is None:
        raise SignatureError("mismatch", "the signature is not the envelope's last field as an agent writes it")
    kid, s = m.group(1).decode(), m.group(2).decode()
    if (kid, s) != (sig.kid, sig.s):  # a second "sig" earlier in the object: the parse took another one
        raise SignatureError("mismatch", "the envelope carries more than one signature")
    message = raw[: m.start()] + b"}"
    message = message.replace(_REPLAYED, _NOT_REPLAYED, 1)
    return Signed(kid, base64.b64decode(s), message)


def verify(public: Ed25519PublicKey, signed: Signed) -> None:
    try:
        public.verify(signed.signature, signed.message)
    except InvalidSignature:
        raise SignatureError("mismatch", f"the signature does not match the event under key {signed.kid}") from None


def as_replayed(raw: bytes) -> bytes:
    """The same event flagged ``replayed`` (sent from the outbox after an outage), its signature still valid:
    one byte-level flip of the top-level flag, nothing re-serialised."""
    return raw.replace(_NOT_REPLAYED, _REPLAYED, 1)
