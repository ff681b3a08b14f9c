"""Config plumbing a process starts from: a TOML file overridden by HALLFLEET_* environment, errors that name the
file and the field, and the MQTT connection's settings (broker, TLS files, password from a credential).

Drivers never import this module: their config models build on ``config.base`` alone, so declaring one loads
neither pydantic-settings nor the MQTT client."""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

from config.base import ConfigError, Section, read_secret_file

if TYPE_CHECKING:
    # The transport is paho: `hallfleet config check` and the centre's config load without it.
    from runtime.transport import TlsFiles

T = TypeVar("T", bound=BaseSettings)
_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


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
    # Down to 1 s: a short expiry is how a scale-out consumer that dies for good leaves its shared group
    # (docs/ingest.md, "Where the next step is"); what the broker then drops, the agents re-send.
    session_expiry_s: int = Field(default=7 * 86_400, ge=1, description="Broker keeps our session this long")
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
            return read_secret_file(self.password_file)
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / "mqtt-password").is_file():
            return read_secret_file(Path(creds) / "mqtt-password")
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
