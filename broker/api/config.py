"""The API's configuration: where it listens and how sessions behave. Store, MQTT, sites and alerts are the
consumer's: ``centre_config`` names the consumer's TOML, so the two never disagree about them."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from broker.config import ConsumerConfig
from config.base import ConfigError, read_secret
from runtime.settings import TomlSettings, load_settings


class ApiConfig(TomlSettings):
    model_config = SettingsConfigDict(
        env_prefix="HALLFLEET_API_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: str = Field(default="127.0.0.1", description="Address uvicorn binds (put a TLS proxy in front)")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port")
    centre_config: Path | None = Field(
        default=None, description="The consumer's TOML: store, MQTT, sites and alerts are read from it"
    )
    centre: ConsumerConfig | None = Field(
        default=None,
        description="Filled from centre_config by load_api_config (tests pass one); not read from the TOML",
    )
    session_ttl_h: float = Field(default=12.0, gt=0, le=24 * 30, description="A login lasts at most this long")
    session_idle_min: float = Field(
        default=30.0, gt=0, le=24 * 60, description="A login unused this long ends (the live stream is not use)"
    )
    cookie_secure: bool = Field(
        default=True, description="Send the session cookie over HTTPS only (false only for plain-HTTP tests)"
    )
    stream_poll_s: float = Field(default=1.0, gt=0, le=60, description="How often the live stream polls the store")
    login_max_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failed logins of one name within login_lockout_s before it is locked out (for addresses it"
        " never logged in from; each address it did log in from has a count of its own)",
    )
    login_lockout_s: float = Field(
        default=300.0, gt=0, le=86_400, description="The window failures are counted in, and the lock-out's length"
    )
    login_source_max_failures: int = Field(
        default=20, ge=1, le=10_000, description="Failed logins from one address (any names) within login_lockout_s"
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Longest request body (413 beyond, unparsed)"
    )
    streams_per_user: int = Field(
        default=8, ge=1, le=100, description="Live streams (open dashboard tabs) one user may hold at once"
    )
    command_ttl_s: int = Field(default=600, ge=10, le=86_400, description="Default time to live of a command")
    metrics_token_file: Path | None = Field(
        default=None,
        description="Bearer token Prometheus sends to /metrics (relative: $CREDENTIALS_DIRECTORY). Unset: /metrics"
        " answers only direct loopback requests, never ones a proxy forwarded, and nobody at all when listen is"
        " beyond loopback",
    )

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(hours=self.session_ttl_h)

    @property
    def session_idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_min)

    @property
    def listens_beyond_loopback(self) -> bool:
        try:
            return not ipaddress.ip_address(self.listen).is_loopback
        except ValueError:
            return self.listen != "localhost"  # a host name: whatever it resolves to, assume the network

    def metrics_token(self) -> str | None:
        if self.metrics_token_file is None:
            return None
        token = read_secret(self.metrics_token_file).strip()
        if len(token) < 16:
            raise ConfigError(f"metrics_token_file {self.metrics_token_file}: the token needs 16 characters or more")
        return token

    @property
    def centre_or_default(self) -> ConsumerConfig:
        return self.centre if self.centre is not None else load_settings(ConsumerConfig, None)


def load_api_config(path: Path | None) -> ApiConfig:
    """The API's TOML, then the consumer's TOML it names (relative to the API's), each loaded on its own."""
    cfg = load_settings(ApiConfig, path)
    if cfg.centre is not None:
        raise ConfigError(f"{path}: write centre_config = PATH (the consumer's TOML), not a [centre] section")
    centre = cfg.centre_config
    if centre is not None and path is not None and not centre.is_absolute():
        centre = path.parent / centre
    return cfg.model_copy(update={"centre": load_settings(ConsumerConfig, centre)})
