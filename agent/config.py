"""Agent configuration: a TOML file, overridden by HALLFLEET_* environment variables.

Secrets never sit in the TOML: ``mqtt.password_file`` names a file, and under systemd ``LoadCredential=``
puts it in ``$CREDENTIALS_DIRECTORY`` (used when no file is named).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from agent.commands.update_config import UpdateConfig
from agent.netcheck import NetCheckConfig
from agent.roles.attendance import AttendanceConfig
from agent.roles.door import DoorConfig
from agent.roles.kiosk import KioskConfig
from agent.roles.locker import LockerConfig
from agent.roles.patrol import PatrolConfig
from agent.roles.queue import QueueRoleConfig
from agent.roles.rating import RatingConfig
from agent.roles.sim import SimConfig
from agent.selfheal import AppWatchConfig
from config.base import ConfigError, Section
from protocol.envelope import Segment
from runtime.settings import MqttConfig, TomlSettings


class OutboxConfig(Section):
    path: Path = Field(default=Path("/var/lib/hallfleet/outbox.db"), description="SQLite outbox file")
    max_critical: int = Field(default=200_000, ge=10, description="Punches/ratings/faults kept; never dropped")
    max_telemetry: int = Field(default=20_000, ge=10, description="Telemetry kept; oldest dropped, counted")
    commit_interval_ms: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Extra wait to gather a group commit when several events wait (0: one waiting event is "
        "committed at once; those taken during a commit share the next)",
    )
    commit_batch: int = Field(default=256, ge=1, description="Flush the group commit at this many events")
    confirm_timeout_s: float = Field(default=120.0, gt=0, description="Re-send unconfirmed events after this")


class AgentConfig(TomlSettings):
    model_config = SettingsConfigDict(env_prefix="HALLFLEET_", env_nested_delimiter="__", extra="forbid", frozen=True)

    site: Segment = Field(description="Site (hall) id, e.g. 'qingpu'")
    device: Segment = Field(description="Device id, unique in its site")
    role: Literal["sim", "kiosk", "attendance", "rating", "queue", "door", "locker", "patrol", "none"] = Field(
        default="none", description="What the agent drives"
    )
    heartbeat_s: float = Field(default=30.0, ge=0.2, le=3600, description="Health telemetry interval")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (off if unset)"
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    kiosk: KioskConfig | None = Field(default=None, description="Printers, counters: with role = 'kiosk'")
    attendance: AttendanceConfig | None = Field(
        default=None, description="Camera, fingerprint reader, QR scanner, gallery: with role = 'attendance'"
    )
    rating: RatingConfig | None = Field(
        default=None, description="The 好差评 pad's window, keypad and queue-system adapter: with role = 'rating'"
    )
    queue: QueueRoleConfig | None = Field(
        default=None, description="A ticket dispenser or call display and its queue system: with role = 'queue'"
    )
    door: DoorConfig | None = Field(default=None, description="The 24-hour area's door controller: role = 'door'")
    locker: LockerConfig | None = Field(default=None, description="A self-service locker bank: role = 'locker'")
    patrol: PatrolConfig | None = Field(default=None, description="A duty officer's patrol handheld: role = 'patrol'")
    netcheck: NetCheckConfig | None = Field(
        default=None, description="The daily network check this device runs itself (kiosk sites, any role)"
    )
    app: AppWatchConfig | None = Field(default=None, description="The application this agent keeps alive")
    log_files: list[Path] = Field(default_factory=list, description="Logs that collect_logs may return")
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="Versions side by side, the updater")
    reboot_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "reboot"],
        min_length=1,
        description="What the reboot command runs",
    )
    sign_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key that signs critical events (issue 24); unset: 'sign-key' in $CREDENTIALS_DIRECTORY"
        " if the bundle put one there, else events go unsigned (a device provisioned before signatures)",
    )
    clock_sync_file: Path = Field(
        default=Path("/run/systemd/timesync/synchronized"),
        description="Exists when the clock is NTP-synchronised (systemd-timesyncd)",
    )

    @model_validator(mode="after")
    def _role_has_its_section(self) -> AgentConfig:
        if self.role == "kiosk" and self.kiosk is None:
            raise ValueError("role 'kiosk' needs a [kiosk] section (receipt, a4, usage)")
        if self.role == "attendance" and self.attendance is None:
            raise ValueError("role 'attendance' needs an [attendance] section (camera, fingerprint, qr)")
        if self.role == "rating" and self.rating is None:
            raise ValueError("role 'rating' needs a [rating] section (window, keypad, queue)")
        if self.role == "queue" and self.queue is None:
            raise ValueError("role 'queue' needs a [queue] section (kind, driver)")
        for role in ("door", "locker", "patrol"):
            if self.role == role and getattr(self, role) is None:
                raise ValueError(f"role {role!r} needs a [{role}] section")
        return self

    def check_files(self) -> None:
        """What the agent needs from the disk, checked at start before anything opens: each problem is one line
        naming the key (ConfigError), not a traceback from deep inside TLS, SQLite or the link's first connect."""
        tls = self.mqtt.tls
        files = [] if tls is None else [("mqtt.tls.ca_file", tls.ca_file)]
        if tls is not None and tls.cert_file is not None and tls.key_file is not None:
            files += [("mqtt.tls.cert_file", tls.cert_file), ("mqtt.tls.key_file", tls.key_file)]
        for key, path in files:
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{key} = {path}: not readable (LoadCredential= puts it in $CREDENTIALS_DIRECTORY)")
        self.mqtt.password()  # a named password file that cannot be read is a ConfigError naming it
        parent = self.outbox.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent  # the outbox creates missing directories: the first existing one must be writable
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"outbox.path = {self.outbox.path}: {parent} is not writable for this user")

    @property
    def client_id(self) -> str:
        return f"{self.site}.{self.device}"
