"""Face galleries between the centre and attendance terminals: encodings only (never photos), sealed.

A gallery update travels as the ``gallery_update`` command. Its body (which staff to add or replace,
with their 128-d encodings, and which to remove) is sealed with AES-256-GCM under the terminal's own
gallery key, and the seal is bound to the terminal and the versions (associated data), so:

- no biometric template is readable on the wire (TLS or not), in the broker's persistence, or in the
  centre's command log;
- a sealed update replayed to another terminal, or as another version, fails to open;
- the terminal keeps its gallery at rest the same way (agent/gallery.py re-seals it with its key).

``base_version`` None means a full gallery that replaces what the terminal holds; otherwise a delta
that applies only on top of exactly that version (the centre sends a full one when a terminal
answers that it holds something else).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field

from protocol.envelope import Frozen

if TYPE_CHECKING:  # numpy loads in pack/unpack, so a terminal without a camera never loads it
    import numpy as np

ENCODING_DIM = 128
MAGIC = b"HFG1"
NONCE_BYTES = 12
KEY_BYTES = 32


class GalleryError(ValueError):
    """A gallery that cannot be used; the message says why (never what it holds)."""


class GalleryUpdate(Frozen):
    """Arguments of the ``gallery_update`` command."""

    version: int = Field(ge=1, description="The version the terminal holds once this is applied")
    base_version: int | None = Field(default=None, ge=0, description="Delta on top of this version; None: full")
    sealed: str = Field(min_length=1, description="AES-GCM sealed body: {upsert: {staff: encodings}, remove: [...]}")
    revoke_by: datetime | None = Field(default=None, description="Removals in it must be in effect by then")


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def key_to_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_from_text(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise GalleryError("the gallery key file must hold 32 bytes in base64") from None
    if len(key) != KEY_BYTES:
        raise GalleryError(f"the gallery key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def associated_data(site: str, device: str, version: int, base_version: int | None) -> bytes:
    return f"hallfleet-gallery|{site}/{device}|{version}|{base_version}".encode()


def seal(key: bytes, body: dict[str, Any], aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(body, separators=(",", ":")).encode()
    return base64.b64encode(MAGIC + nonce + AESGCM(key).encrypt(nonce, plain, aad)).decode()


def unseal(key: bytes, token: str, aad: bytes) -> dict[str, Any]:
    try:
        raw = base64.b64decode(token, validate=True)
    except binascii.Error:
        raise GalleryError("the sealed gallery is not base64") from None
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + NONCE_BYTES + 16:
        raise GalleryError("not a sealed hallfleet gallery")
    nonce, box = raw[len(MAGIC) : len(MAGIC) + NONCE_BYTES], raw[len(MAGIC) + NONCE_BYTES :]
    try:
        plain = AESGCM(key).decrypt(nonce, box, aad)
    except InvalidTag:
        raise GalleryError("the gallery does not open with this terminal's key, device and version") from None
    body = json.loads(plain)
    if not isinstance(body, dict):
        raise GalleryError("a gallery body is an object")
    return body


def pack(encodings: np.ndarray) -> str:
    """(k, 128) encodings -> base64 of float32: a quarter of the size of JSON numbers."""
    import numpy as np

    arr = np.asarray(encodings, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != ENCODING_DIM or arr.shape[0] < 1:
        raise GalleryError(f"encodings must be (k, {ENCODING_DIM}) with k >= 1, not {arr.shape}")
    return base64.b64encode(arr.tobytes()).decode()


def unpack(text: str) -> np.ndarray:
    import numpy as np

    raw = base64.b64decode(text)
    if not raw or len(raw) % (4 * ENCODING_DIM):
        raise GalleryError("packed encodings have the wrong length")
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, ENCODING_DIM).astype(np.float64)
