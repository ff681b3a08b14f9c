"""The base of every config model, on the device, on the centre and in the drivers: frozen ``extra="forbid"``
sections, the one error a config that cannot start a process raises, and secrets read from files.

The rule this module keeps: it imports pydantic and the standard library only, so a driver declaring its config
model loads no MQTT client and no settings loader (tests/test_layers.py)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """A configuration that cannot start the process; the message names the file and the field.

    ``problems`` holds each invalid field as ("a.b.c", "what is wrong"), for callers that print one line each."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def secret_path(path: Path) -> Path:
    """A relative secret path is looked up in systemd's $CREDENTIALS_DIRECTORY first (``LoadCredential=``),
    so units keep secrets out of config files and world-readable paths."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds and (Path(creds) / path).is_file():
        return Path(creds) / path
    return path


def read_secret(path: Path) -> str:
    """The secret in ``path`` (found through secret_path), stripped; ConfigError names the file."""
    return read_secret_file(secret_path(path))


def read_secret_file(path: Path) -> str:
    """The secret in exactly ``path``, stripped; ConfigError names the file."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret {path}: {exc}") from None
