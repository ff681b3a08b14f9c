"""Staged rollout of a hallfleet version to a site's agents: canaries first, then batches, stopping at the first
device that does not end up on the new version.

Each device gets the agent's ``update`` command (agent/commands/update.py) through the same path as
``hallfleet cmd send`` (broker.commands.issue_command: committed and audited before it is published), and the
rollout follows the command's state in the store until the device's final ack: ``succeeded`` is a device on the
new version and healthy, ``failed`` a refusal, a failed install or a rollback (the ack's result says which). A
batch starts only when every device of the one before is updated; after a failure no other device is touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from packaging.version import InvalidVersion, Version

from broker.commands import CommandError, command_row, issue_command
from broker.store.db import Store
from broker.store.schema import devices, events
from protocol import topics
from protocol.commands import FINAL_STATES, CommandState
from runtime.transport import AsyncMqtt

OUTCOME_ZH = {
    "updated": "已更新",
    "rolled_back": "已回滚",
    "failed": "失败",
    "rejected": "已拒绝",
    "expired": "已过期（设备未领取）",
    "timeout": "超时（仍在进行）",
    "skipped": "未执行",
    "already": "已是该版本",
}
OUTCOME_EN = {
    "updated": "updated",
    "rolled_back": "rolled back",
    "failed": "failed",
    "rejected": "rejected",
    "expired": "expired (the device never took it)",
    "timeout": "timed out (still in progress)",
    "skipped": "not touched",
    "already": "already on this version",
}


class RolloutRefused(CommandError):
    """A rollout the centre will not start; the message says why."""


@dataclass(frozen=True, slots=True)
class Plan:
    site: str
    version: str
    store_url: str
    stages: list[list[str]]  # the first stage is the canaries
    health_timeout_s: float = 120.0
    allow_downgrade: bool = False

    def args(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "store": self.store_url,
            "health_timeout_s": self.health_timeout_s,
            "allow_downgrade": self.allow_downgrade,
        }


@dataclass(frozen=True, slots=True)
class DeviceResult:
    device: str
    stage: int
    outcome: str
    reason: str = ""
    command_id: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("updated", "already")


def make_stages(devices_: list[str], *, canary: list[str] | None, canary_count: int, batch: int) -> list[list[str]]:
    """Canaries (named, or the first ``canary_count`` by name), then the rest in batches of ``batch``."""
    if batch < 1:
        raise RolloutRefused("--batch must be at least 1")
    if not devices_:
        raise RolloutRefused("no devices to update")
    if canary:
        unknown = [d for d in canary if d not in devices_]
        if unknown:
            raise RolloutRefused(f"--canary {', '.join(unknown)}: not among the devices of this rollout")
        first = list(dict.fromkeys(canary))
    else:
        if canary_count < 1:
            raise RolloutRefused("--canary-count must be at least 1: a rollout starts with canaries")
        first = sorted(devices_)[:canary_count]
    rest = [d for d in sorted(devices_) if d not in first]
    return [first] + [rest[i : i + batch] for i in range(0, len(rest), batch)]


def check_version(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        raise RolloutRefused(f"--version {version!r} is not a PEP 440 version (e.g. 1.5.0)") from None


async def site_devices(store: Store, site: str) -> list[Any]:
    """The site's devices as the store knows them (name, reported version, presence)."""
    q = (
        sa.select(devices.c.device, devices.c.agent_version, devices.c.presence, devices.c.role)
        .where(devices.c.site == site)
        .order_by(devices.c.device)
    )
    return list(await store.fetch(q))


async def last_updates(store: Store, site: str) -> dict[str, dict[str, Any]]:
    """Each device's latest ``device.updated`` payload."""
    q = (
        sa.select(events.c.device, events.c.data, events.c.ts)
        .where(events.c.site == site, events.c.type == "device.updated")
        .order_by(events.c.ts)
    )
    out: dict[str, dict[str, Any]] = {}
    for row in await store.fetch(q):
        out[row.device] = {**json.loads(row.data), "ts": row.ts}
    return out


async def follow(store: Store, command_id: str, wait_s: float, every_s: float = 0.5) -> tuple[str, str]:
    """Until the command's final state; returns (outcome, reason)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        row = await command_row(store, command_id)
        if row is not None and CommandState(row.state) in FINAL_STATES:
            return _outcome(row.state, row.result), str(row.refusal or "")
        await asyncio.sleep(every_s)
    return "timeout", f"no final answer within {wait_s:.0f} s: hallfleet cmd show {command_id}"


def _outcome(state: str, result: str | None) -> str:
    if state == CommandState.SUCCEEDED:
        return "updated"
    if state == CommandState.FAILED:
        try:
            reported = json.loads(result or "null")
        except ValueError:
            reported = None
        if isinstance(reported, dict) and reported.get("outcome") == "rolled_back":
            return "rolled_back"
        return "failed"
    return str(state)


async def rollout(
    store: Store,
    client: AsyncMqtt,
    plan: Plan,
    *,
    issuer: str,
    reason: str,
    wait_s: float,
    ttl_s: int = 600,
    say: Callable[[str], None] = print,
) -> list[DeviceResult]:
    """Run the plan; returns one result per device (``skipped`` for those never touched)."""
    results: list[DeviceResult] = []
    for n, stage in enumerate(plan.stages):
        label = "金丝雀 canary" if n == 0 else f"批次 batch {n}"
        say(f"{label}: {', '.join(stage)}")
        sent: list[tuple[str, str]] = []
        for device in stage:
            cmd = await issue_command(
                store,
                client,
                f"{plan.site}/{device}",
                "update",
                plan.args(),
                issuer=issuer,
                reason=reason,
                ttl_s=ttl_s,
            )
            sent.append((device, cmd.id))
        answers = await asyncio.gather(*(follow(store, cid, wait_s) for _, cid in sent))
        stage_results = [
            DeviceResult(device, n, outcome, why, cid)
            for (device, cid), (outcome, why) in zip(sent, answers, strict=True)
        ]
        for r in stage_results:
            say(f"  {r.device}: {OUTCOME_ZH[r.outcome]} {OUTCOME_EN[r.outcome]} {r.reason}".rstrip())
        results += stage_results
        if not all(r.ok for r in stage_results):
            results += [DeviceResult(d, m, "skipped") for m, later in enumerate(plan.stages) if m > n for d in later]
            break
    return results


def summary(plan: Plan, results: list[DeviceResult]) -> str:
    """Chinese first, then English."""
    done = [r for r in results if r.outcome == "updated"]
    already = [r for r in results if r.outcome == "already"]
    failed = [r for r in results if not r.ok and r.outcome != "skipped"]
    skipped = [r for r in results if r.outcome == "skipped"]
    lines = [f"{plan.site} 更新到 {plan.version} / update of {plan.site} to {plan.version}"]
    if already:
        lines.append(f"已是该版本 already on it: {', '.join(r.device for r in already)}")
    if not failed:
        lines.append(f"完成：{len(done)} 台已更新 / done: {len(done)} devices updated")
        return "\n".join(lines)
    first = failed[0]
    lines.append(
        f"已停止：{first.device} {OUTCOME_ZH[first.outcome]}（{first.reason}）；"
        f"{len(done)} 台已更新，{len(skipped)} 台未执行"
    )
    lines.append(
        f"stopped: {first.device} {OUTCOME_EN[first.outcome]} ({first.reason}); "
        f"{len(done)} updated, {len(skipped)} not touched"
    )
    if skipped:
        lines.append(f"未执行 not touched: {', '.join(r.device for r in skipped)}")
    return "\n".join(lines)


def check_site(site: str) -> str:
    return topics.check_segment(site, "site")
