"""The device's signing key, read once at start from its file or systemd credential.

Reading the key is the device's I/O, so it lives here and not in protocol/signing.py, which keeps only what
both sides agree on (what is signed, how the signature travels, the credential's name)."""

from __future__ import annotations

from pathlib import Path

from config.base import ConfigError, read_secret, secret_path
from protocol.signing import SIGN_KEY_CREDENTIAL, Signer


def load_signer(path: Path | None) -> Signer | None:
    """The device's signer: a named file must load; unnamed, the bundle's credential if there is one (an agent
    provisioned before signatures has none and signs nothing; the centre's ingest.require_signatures decides)."""
    if path is None:
        found = secret_path(Path(SIGN_KEY_CREDENTIAL))
        if not found.is_absolute() or not found.is_file():
            return None
        path = found
    try:
        return Signer.from_text(read_secret(path))
    except ValueError as exc:
        raise ConfigError(f"signing key {path}: {exc}") from None
