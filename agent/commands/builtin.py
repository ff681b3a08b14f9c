"""The commands every agent knows: restart_app, restart_agent, reboot, diagnose, sync_config,
collect_logs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pydantic import Field

from agent.commands.registry import CommandFailed, CommandSpec, NoArgs
from agent.commands.update import UPDATE
from protocol.envelope import Frozen

if TYPE_CHECKING:
    from agent.agent import Agent

LOG_BYTES_MAX = 10_000  # an ack is an event: it must stay well under the 16 KiB envelope limit


class RebootArgs(Frozen):
    delay_s: int = Field(default=5, ge=0, le=300, description="Seconds before rebooting (lets the ack out)")


class CollectLogsArgs(Frozen):
    lines: int = Field(default=100, ge=1, le=500, description="Lines from the end of each log")


async def restart_app(agent: Agent, _args: NoArgs) -> dict[str, Any]:
    if agent.app_watch is None:
        raise CommandFailed("no application is configured on this device ([app] in its config)")
    ok = await agent.app_watch.restart("command", "restart_app command")
    if not ok:
        raise CommandFailed("the application did not come back healthy after the restart")
    return {"healthy": True}


async def restart_agent(agent: Agent, _args: NoArgs) -> dict[str, Any]:
    agent.request_restart()
    return {}


async def reboot(agent: Agent, args: RebootArgs) -> dict[str, Any]:
    last = float(await agent.outbox.kv_get("last_reboot") or 0)
    gap = agent.settings.reboot_min_interval_s
    if time.time() - last < gap:
        raise CommandFailed(
            f"rate-limited: the last reboot was {time.time() - last:.0f} s ago, the minimum is {gap:.0f} s"
        )
    await agent.outbox.kv_set("last_reboot", str(time.time()))
    await asyncio.sleep(args.delay_s)
    code, out = await _run(agent.cfg.reboot_command)
    if code != 0:
        raise CommandFailed(f"{' '.join(agent.cfg.reboot_command)} exited {code}: {out[-500:]}")
    return {}


async def diagnose(agent: Agent, _args: NoArgs) -> dict[str, Any]:
    return await agent.diagnose()


async def sync_config(agent: Agent, _args: NoArgs) -> dict[str, Any]:
    version = await agent.config.resync()
    return {"applied_version": version}


async def collect_logs(agent: Agent, args: CollectLogsArgs) -> dict[str, Any]:
    sources: dict[str, list[str]] = {}
    for path in agent.cfg.log_files:
        try:
            with path.open(errors="replace") as f:
                sources[str(path)] = [line.rstrip("\n") for line in deque(f, maxlen=args.lines)]
        except OSError as exc:
            sources[str(path)] = [f"<cannot read: {exc}>"]
    unit = agent.app_watch.cfg.unit if agent.app_watch else None
    if unit and shutil.which("journalctl"):
        code, out = await _run(["journalctl", "-u", unit, "-n", str(args.lines), "--no-pager", "-o", "short-iso"])
        sources[f"journal:{unit}"] = out.splitlines() if code == 0 else [f"<journalctl exited {code}>"]
    return _bounded(sources)


def _bounded(sources: dict[str, list[str]]) -> dict[str, Any]:
    """Keep the newest lines of every source within LOG_BYTES_MAX altogether."""
    budget = LOG_BYTES_MAX // max(1, len(sources))
    out: dict[str, list[str]] = {}
    truncated = False
    for name, lines in sources.items():
        kept: list[str] = []
        used = 0
        for line in reversed(lines):
            line = line[:500]
            if used + len(line.encode()) > budget:
                truncated = True
                break
            kept.append(line)
            used += len(line.encode()) + 1
        out[name] = list(reversed(kept))
    return {"logs": out, "truncated": truncated}


async def _run(argv: list[str], timeout_s: float = 30) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        return 127, str(exc)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, f"timed out after {timeout_s} s"
    return proc.returncode or 0, out.decode(errors="replace")


BUILTIN = [
    CommandSpec("restart_app", NoArgs, restart_app, timeout_s=300),
    CommandSpec("restart_agent", NoArgs, restart_agent, ends_agent=True),
    CommandSpec("reboot", RebootArgs, reboot, needs_reason=True, ends_agent=True, timeout_s=400),
    CommandSpec("diagnose", NoArgs, diagnose),
    CommandSpec("sync_config", NoArgs, sync_config),
    CommandSpec("collect_logs", CollectLogsArgs, collect_logs),
    UPDATE,  # agent/commands/update.py: a new hallfleet version, rolled back if unhealthy
]
