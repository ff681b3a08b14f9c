"""Consumer configuration: a TOML file, overridden by HALLFLEET_* environment variables."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from broker.alerts.routing import AlertsConfig
from broker.gallery import GalleryCentreConfig
from broker.sites import SiteConfig
from config.base import Section
from protocol.envelope import Segment
from runtime.settings import MqttConfig, TomlSettings


class StoreConfig(Section):
    url: str = Field(
        default="sqlite+aiosqlite:////var/lib/hallfleet/hallfleet.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH (embedded) or postgresql+asyncpg://... (scale-out)",
    )


class IngestConfig(Section):
    share_group: Segment = Field(default="hallfleet", description="MQTT 5 shared-subscription group")
    batch_size: int = Field(default=500, ge=1, le=20_000, description="Commit when this many messages wait")
    # 5 ms: at 2,000 events/s publish -> committed p99 17.6 ms on SQLite and 24.2 ms on PostgreSQL (20 ms: 40.1 and
    # 45.2) for 43 % of a core against 35 % (docs/ingest.md, bench/results/ingest-2026-12-07.md, the 20:56 run).
    batch_wait_ms: int = Field(default=5, ge=0, le=5000, description="...or when the oldest waited this long")
    # A backlog's drain commits half of it at a time while the other half arrives (broker/ingest/batch.py): at
    # 2,000, batches of 1,000 paid a commit's fixed cost (its fsync, a trip to the writer's thread) twice as often
    # as at 8,000 (docs/ingest.md). A live hall's batches are far smaller: this only bounds a backlog's bites.
    receive_maximum: int = Field(
        default=8000, ge=1, le=65535, description="Unacknowledged messages the broker may send us at once"
    )
    stale_factor: float = Field(default=1.5, ge=1.0, le=10, description="Stale after this many heartbeats")
    sweep_s: float = Field(default=1.0, gt=0, le=60, description="How often overdue heartbeats are checked")
    republish_s: float = Field(default=30.0, gt=0, description="Re-send commands still queued after this long")
    health_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How often this consumer writes its health row (the dashboard's store banner; stale after 3)",
    )
    require_signatures: Literal["registered", "all", "off"] = Field(
        default="registered",
        description="Unsigned critical events: 'registered' refuses them from devices with a registered key, 'all'"
        " from every device, 'off' takes them (a bad signature is refused whatever this says)",
    )
    keys_refresh_s: float = Field(
        default=10.0, gt=0, le=600, description="How often device keys are re-read from the store"
    )


class RulesConfig(Section):
    enabled: bool = Field(default=True, description="Run incidents, the SLA clock and alerting in this consumer")
    tick_s: float = Field(default=1.0, gt=0, le=60, description="How often SLA timers are checked")
    plan_every_s: float = Field(default=300.0, gt=0, description="How often restock and maintenance are planned")
    attendance_every_s: float = Field(
        default=300.0, gt=0, description="How often attendance records are locked and A/B coverage checked"
    )
    ratings_every_s: float = Field(
        default=60.0, gt=0, description="How often ratings are checked (proxy patterns, follow-ups, long pauses)"
    )
    queueing_every_s: float = Field(
        default=30.0, gt=0, description="How often ticket steps are folded and waits past 10/30/60 are told"
    )
    duties_every_s: float = Field(
        default=300.0,
        gt=0,
        description="How often (real seconds) the daily duties are judged (network checks, power-on/off, patrol"
        " rounds) and the missed or failed ones and lockers' items held too long are told",
    )
    gallery_every_s: float = Field(
        default=60.0, gt=0, description="How often terminals missing a face-gallery update are sent one"
    )


class HallConfig(Section):
    site: Segment | None = Field(
        default=None,
        description="Set on a hall's own consumer, next to the hall's broker: the one site it serves"
        " (docs/hall-autonomy.md). It takes only that site's topics, never confirms to devices, runs the site's"
        " incidents, SLA clock and alerts on its own store, and sends its incidents to the centre",
    )
    mirror_s: float = Field(default=1.0, gt=0, le=60, description="How often changed incidents are sent to the centre")
    resync_s: float = Field(
        default=300.0, gt=0, description="How often every incident of the last day is sent to the centre again"
    )


class ConsumerConfig(TomlSettings):
    model_config = SettingsConfigDict(env_prefix="HALLFLEET_", env_nested_delimiter="__", extra="forbid", frozen=True)

    instance: Segment = Field(
        default_factory=lambda: socket.gethostname().split(".")[0][:60] or "central",
        description="Unique and stable per consumer process: its persistent MQTT session (client id"
        " consumer-{instance}) holds its share of the queue while it restarts",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    sites: dict[Segment, SiteConfig] = Field(
        default_factory=dict, description="Per-site calendar and policies; unlisted sites get the defaults"
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    gallery: GalleryCentreConfig = Field(default_factory=GalleryCentreConfig)
    hall: HallConfig = Field(
        default_factory=HallConfig, description="A hall's own consumer (hall.site set) instead of the centre's"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (off if unset)"
    )

    @property
    def role(self) -> Literal["centre", "hall"]:
        return "centre" if self.hall.site is None else "hall"

    @property
    def site(self) -> str | None:
        """The one site a hall consumer serves; None at the centre (every site)."""
        return self.hall.site

    @model_validator(mode="after")
    def _hall_fits(self) -> ConsumerConfig:
        """A hall consumer that acted for other sites, or did not act at all, would break the merge rule."""
        site = self.hall.site
        if site is None:
            return self
        if not self.rules.enabled:
            raise ValueError(f"rules.enabled: hall.site is set ({site}): a hall consumer exists to run the rules")
        if self.ingest.require_signatures == "all":
            raise ValueError(
                "ingest.require_signatures: 'all' on a hall consumer (hall.site) would refuse every signed event:"
                " the hall holds no device keys (the centre verifies them); use 'registered'"
            )
        others = sorted(set(self.sites) - {site})
        if others:
            raise ValueError(f"sites: the hall consumer of {site} (hall.site) cannot configure other sites {others}")
        return self
