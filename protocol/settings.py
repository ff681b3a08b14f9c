"""Configuration plumbing both sides share: TOML file + HALLFLEET_* environment, secrets from files,
errors that name the file and the field."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

if TYPE_CHECKING:
    # The transport is paho; drivers read their config models from here and must not load an MQTT client.
    from runtime.transport import TlsFiles

T = TypeVar("T", bound=BaseSettings)
_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


class ConfigError(Exception):
    """A configuration that cannot start the process; the message names the file and the field.

    ``problems`` holds each invalid field as ("a.b.c", "what is wrong"), for callers that print one line each."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Section):
    ca_file: Path = Field(description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="Client certificate (X.509 auth)")
    key_file: Path | None = Field(default=None, description="Client key (X.509 auth)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(Section):
    host: str = Field(default="127.0.0.1", description="Broker host")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 with TLS)")
    username: str | None = Field(default=None, description="Per-device user; defaults to {site}.{device}")
    password_file: Path | None = Field(default=None, description="File holding the MQTT password")
    tls: TlsConfig | None = Field(default=None, description="TLS settings; plain TCP when absent")
    keepalive_s: int = Field(default=30, ge=2, le=600, description="MQTT keepalive; Will fires after 1.5x")
    session_expiry_s: int = Field(default=7 * 86_400, ge=60, description="Broker keeps our session this long")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="First reconnect delay")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Reconnect delay cap")
    max_inflight: int = Field(default=100, ge=1, le=65535, description="Unacknowledged publishes at once")

    def tls_files(self) -> TlsFiles | None:
        if self.tls is None:
            return None
        from runtime.transport import TlsFiles

        t = self.tls
        return TlsFiles(
            str(t.ca_file), str(t.cert_file) if t.cert_file else None, str(t.key_file) if t.key_file else None
        )

    def password(self) -> str | None:
        if self.password_file is not None:
            return _read_secret(self.password_file)
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / "mqtt-password").is_file():
            return _read_secret(Path(creds) / "mqtt-password")
        return None


class TomlSettings(BaseSettings):
    """Settings read from the TOML file given to load_settings(), overridden by the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(cls: type[T], path: Path | None) -> T:
    """Load ``cls`` from a TOML file plus the environment; ConfigError names the file and field."""
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    token = _toml_path.set(path)
    try:
        return cls()
    except ValidationError as exc:
        where = str(path) if path else "environment"
        problems = tuple((".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors())
        lines = [f"  {loc}: {msg}" for loc, msg in problems]
        raise ConfigError(f"invalid config ({where}):\n" + "\n".join(lines), problems) from None
    except (OSError, ValueError) as exc:  # TOML syntax errors are ValueErrors
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    finally:
        _toml_path.reset(token)


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret {path}: {exc}") from None


def secret_path(path: Path) -> Path:
    """A relative secret path is looked up in systemd's $CREDENTIALS_DIRECTORY first (``LoadCredential=``),
    so units keep secrets out of config files and world-readable paths."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds and (Path(creds) / path).is_file():
        return Path(creds) / path
    return path


def read_secret(path: Path) -> str:
    return _read_secret(secret_path(path))
