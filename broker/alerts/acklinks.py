"""Acknowledgement links in alert messages: ``{incident}.{expiry}.{mac}``, an HMAC-SHA256 over the incident id
and the link's expiry (Unix seconds, hex), cut to 120 bits.

The rules: a link acknowledges one incident and only until it expires (``ack_link_ttl_h`` after the message
was written); the secret that signs it has 32 bytes or more, checked when the consumer or the API starts, so a
guessable secret never signs a link; comparison is on bytes, so a crafted token of any characters is just
"not valid". What the link does on a closed incident is the page's business (broker/api/pages.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.base import ConfigError, read_secret

MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class AckLink:
    incident_id: str
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def load_secret(path: Path) -> bytes:
    secret = read_secret(path).strip().encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"alerts.ack_secret_file {path}: the secret has {len(secret)} bytes, acknowledgement links need"
            f" {MIN_SECRET_BYTES} or more (e.g. openssl rand -hex 32 > {path})"
        )
    return secret


def _mac(secret: bytes, signed: str) -> str:
    digest = hmac.new(secret, signed.encode(), hashlib.sha256).digest()[:15]
    return base64.urlsafe_b64encode(digest).decode()


def sign_ack(secret: bytes, incident_id: str, expires_at: datetime) -> str:
    signed = f"{incident_id}.{int(expires_at.timestamp()):x}"
    return f"{signed}.{_mac(secret, signed)}"


def verify_ack(secret: bytes, token: str) -> AckLink | None:
    """The link's incident and expiry, or None for a forged or mangled token (expiry is not checked here)."""
    signed, _, mac = token.rpartition(".")
    incident_id, _, expiry = signed.rpartition(".")
    if not incident_id or not hmac.compare_digest(_mac(secret, signed).encode(), mac.encode("utf-8", "replace")):
        return None
    try:
        return AckLink(incident_id, datetime.fromtimestamp(int(expiry, 16), UTC))
    except (ValueError, OverflowError, OSError):
        return None
