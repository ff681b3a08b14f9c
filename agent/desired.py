"""Desired and reported config: the centre publishes a versioned config (retained ``cfg``); the agent
validates it, applies it, keeps it, and reports ``config.applied`` or ``config.rejected`` with the
fields named. A rejected config never replaces the working one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from pydantic import Field, ValidationError

from agent.device import DeviceContext
from config.base import Section
from drivers.face.config import FaceSiteSettings
from protocol.commands import ConfigReport, DesiredConfig

log = logging.getLogger(__name__)
KV_APPLIED = "config.applied"
KV_LAST_DESIRED = "config.last_desired"


class DeviceSettings(Section):
    """What the centre may change at run time (the rest of the agent's config is local to the device)."""

    heartbeat_s: float | None = Field(default=None, ge=0.2, le=3600, description="Health interval")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(default=None, description="Agent log level")
    reboot_min_interval_s: float = Field(default=3600, ge=0, description="Refuse a reboot command sooner than this")
    labels: dict[str, str] = Field(default_factory=dict, max_length=20, description="Zone, window, etc.")
    face: FaceSiteSettings | None = Field(
        default=None,
        description="A face terminal's site settings, set at the centre per site (broker/sites.py ``face``); "
        "absent: the terminal's own [attendance.face] values",
    )


class ConfigApplier:
    def __init__(self, device: DeviceContext, on_change: Callable[[], None]) -> None:
        """``on_change``: called after each config is applied (the agent's heartbeat follows it)."""
        self.device = device
        self.on_change = on_change
        self.version = 0
        self.settings = DeviceSettings()

    async def load(self) -> None:
        """Apply what was applied before the restart, before connecting: a device restarts as it ran."""
        raw = await self.device.state.kv_get(KV_APPLIED)
        if raw:
            desired = DesiredConfig.model_validate_json(raw)
            self._apply(desired, DeviceSettings.model_validate(desired.config))

    def offer(self, raw: bytes) -> None:
        """From the MQTT link: handled in the agent's task so the socket callback never waits."""
        self.device.spawn(self.handle(raw), "config")

    async def handle(self, raw: bytes) -> None:
        if not raw:  # the retained config was cleared: keep running what we have
            return
        try:
            desired = DesiredConfig.model_validate_json(raw)
        except ValidationError as exc:
            await self._reject(0, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10]])
            return
        if desired.version <= self.version:
            return  # the retained copy we already run, or an older one
        await self.device.state.kv_set(KV_LAST_DESIRED, raw.decode())
        try:
            settings = DeviceSettings.model_validate(desired.config)
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()[:10]]
            await self._reject(desired.version, errors)
            return
        await self.device.state.kv_set(KV_APPLIED, desired.model_dump_json())
        self._apply(desired, settings)
        await self.device.emit("config.applied", ConfigReport(version=desired.version))
        log.info("config version %d applied", desired.version)

    async def resync(self) -> int:
        """sync_config: take the last desired config received again (e.g. after a fix on the device)."""
        raw = await self.device.state.kv_get(KV_LAST_DESIRED)
        if raw:
            self.version = min(self.version, DesiredConfig.model_validate_json(raw).version - 1)
            await self.handle(raw.encode())
        return self.version

    async def _reject(self, version: int, errors: list[str]) -> None:
        log.warning("config version %d rejected: %s", version, "; ".join(errors))
        await self.device.emit("config.rejected", ConfigReport(version=version, errors=errors))

    def _apply(self, desired: DesiredConfig, settings: DeviceSettings) -> None:
        self.version = desired.version
        self.settings = settings
        if settings.log_level:
            logging.getLogger().setLevel(settings.log_level)
        self.on_change()
