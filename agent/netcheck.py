"""The daily network check a kiosk's agent runs itself (QP 000:389: the hall's duties for the self-service
terminals' environment include 「网络日常检查」): gateway, DNS, the centre, the government extranet endpoint.

Each probe is a TCP connection or a name lookup from the device, so it tests the path the kiosk uses and needs no
privileges: a gateway that answers with a reset (connection refused) is reachable, only silence or an
unreachable network fails it. The check runs once a day at ``daily_at`` (device local time), at start when the
day's check has not run yet, and on the ``network_check`` command; its result is a ``duty.netcheck`` event
through the outbox, so a check made while the centre was unreachable still arrives (and says so).
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from agent.commands.registry import CommandSpec, NoArgs, Registry
from agent.device import DeviceContext
from config.base import Section
from protocol.hall_events import NetCheck, NetProbe, NetTarget
from runtime.clock import real_seconds

LAST_RUN_KEY = "netcheck.last_day"


class Endpoint(Section):
    host: str = Field(min_length=1, max_length=253, description="Host name or address")
    port: int = Field(ge=1, le=65535, description="TCP port")


class NetCheckConfig(Section):
    daily_at: str = Field(default="08:00", pattern=r"^\d{2}:\d{2}$", description="When the daily check runs (local)")
    timezone: str = Field(default="Asia/Shanghai", description="Zone of daily_at")
    gateway: Endpoint | None = Field(
        default=None,
        description="The LAN gateway (a refused connection counts as reachable); unset: the default"
        " route's gateway from /proc/net/route, port 53",
    )
    dns_name: str | None = Field(
        default=None, max_length=253, description="A name the resolver must resolve (unset: no DNS probe)"
    )
    centre: Endpoint | None = Field(default=None, description="The centre's broker (unset: the agent's MQTT link)")
    extranet: Endpoint | None = Field(default=None, description="The government extranet (政务外网) endpoint, if any")
    timeout_s: float = Field(default=3.0, gt=0, le=60, description="Each probe's limit")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value


def default_gateway(route_file: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default route's gateway, as the kernel's routing table has it."""
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


async def tcp_probe(target: NetTarget, ep: Endpoint, timeout_s: float, refused_ok: bool = False) -> NetProbe:
    t0 = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), timeout_s)
    except ConnectionRefusedError:
        ms = (time.monotonic() - t0) * 1000
        return NetProbe(target=target, ok=refused_ok, ms=ms, detail=f"{ep.host}:{ep.port} refused")
    except (TimeoutError, OSError) as exc:
        return NetProbe(target=target, ok=False, detail=f"{ep.host}:{ep.port} {type(exc).__name__}: {exc}"[:200])
    writer.close()
    return NetProbe(target=target, ok=True, ms=(time.monotonic() - t0) * 1000, detail=f"{ep.host}:{ep.port}")


async def dns_probe(name: str, timeout_s: float) -> NetProbe:
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), timeout_s)
    except (TimeoutError, OSError) as exc:
        return NetProbe(target="dns", ok=False, detail=f"{name}: {type(exc).__name__}: {exc}"[:200])
    return NetProbe(target="dns", ok=True, ms=(time.monotonic() - t0) * 1000, detail=f"{name} -> {found[0][4][0]}")


class NetChecker:
    """Runs the probes and emits the result. ``centre``: the agent's own broker, unless the config names one."""

    def __init__(self, device: DeviceContext, cfg: NetCheckConfig, centre: Endpoint) -> None:
        self.device = device
        self.cfg = cfg
        self.centre = cfg.centre or centre
        self.zone = ZoneInfo(cfg.timezone)

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("network_check", NoArgs, self._cmd_check))

    async def check(self, trigger: Literal["daily", "command", "start"]) -> NetCheck:
        t = self.cfg.timeout_s
        jobs: list[Any] = []
        gateway = self.cfg.gateway or (Endpoint(host=gw, port=53) if (gw := default_gateway()) else None)
        if gateway is not None:
            jobs.append(tcp_probe("gateway", gateway, t, refused_ok=True))
        if self.cfg.dns_name:
            jobs.append(dns_probe(self.cfg.dns_name, t))
        jobs.append(tcp_probe("centre", self.centre, t))
        if self.cfg.extranet is not None:
            jobs.append(tcp_probe("extranet", self.cfg.extranet, t))
        probes = list(await asyncio.gather(*jobs))
        if gateway is None:
            probes.insert(0, NetProbe(target="gateway", ok=False, detail="no default route"))
        result = NetCheck(ok=all(p.ok for p in probes), probes=probes, trigger=trigger)
        await self.device.emit("duty.netcheck", result)
        await self.device.state.kv_set(LAST_RUN_KEY, self._today().isoformat())
        return result

    async def run(self) -> None:
        """Once a day at ``daily_at``; at start too when today's check is due and has not run."""
        while True:
            now = self.device.clock.now().astimezone(self.zone)
            due = self._due(now)
            done = await self.device.state.kv_get(LAST_RUN_KEY) == now.date().isoformat()
            if now >= due and not done:
                await self.check("daily")
                continue
            wait = (due if now < due else due + timedelta(days=1)) - now
            # Re-read the clock at least every 5 minutes of its time: a device clock may be stepped or scaled.
            await asyncio.sleep(real_seconds(self.device.clock, min(wait.total_seconds(), 300)) + 0.01)

    def _due(self, local: datetime) -> datetime:
        hh, mm = (int(x) for x in self.cfg.daily_at.split(":"))
        return local.replace(hour=hh, minute=mm, second=0, microsecond=0)

    def _today(self) -> Any:
        return self.device.clock.now().astimezone(self.zone).date()

    async def _cmd_check(self, _args: NoArgs) -> dict[str, Any]:
        result = await self.check("command")
        return {"ok": result.ok, "failed": [p.target for p in result.probes if not p.ok]}
