"""The commands every agent knows: restart_app, restart_agent, reboot, diagnose, sync_config,
collect_logs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import Field

from agent.commands.host import AgentHost
from agent.commands.registry import CommandFailed, CommandSpec, NoArgs
from agent.commands.update import update_command
from protocol.envelope import Frozen

LOG_BYTES_MAX = 10_000  # an ack is an event: it must stay well under the 16 KiB envelope limit


class RebootArgs(Frozen):
    delay_s: int = Field(default=5, ge=0, le=300, description="Seconds before rebooting (lets the ack out)")


class CollectLogsArgs(Frozen):
    lines: int = Field(default=100, ge=1, le=500, description="Lines from the end of each log")


async def restart_app(agent: AgentHost, _args: NoArgs) -> dict[str, Any]:
    if agent.app_watch is None:
        raise CommandFailed("no application is configured on this device ([app] in its config)")
    ok = await agent.app_watch.restart("command", "restart_app command")
    if not ok:
        raise CommandFailed("the application did not come back healthy after the restart")
    return {"healthy": True}


async def restart_agent(agent: AgentHost, _args: NoArgs) -> dict[str, Any]:
    agent.request_restart()
    return {}


async def reboot(agent: AgentHost, args: RebootArgs) -> dict[str, Any]:
    state, now = agent.ctx.state, agent.ctx.clock.now().timestamp()
    last = float(await state.kv_get("last_reboot") or 0)
    gap = agent.settings.reboot_min_interval_s
    if now - last < gap:
        raise CommandFailed(f"rate-limited: the last reboot was {now - last:.0f} s ago, the minimum is {gap:.0f} s")
    await state.kv_set("last_reboot", str(now))
    await asyncio.sleep(args.delay_s)
    code, out = await _run(agent.cfg.reboot_command)
    if code != 0:
        raise CommandFailed(f"{' '.join(agent.cfg.reboot_command)} exited {code}: {out[-500:]}")
    return {}


async def diagnose(agent: AgentHost, _args: NoArgs) -> dict[str, Any]:
    return await agent.diagnose()


async def sync_config(agent: AgentHost, _args: NoArgs) -> dict[str, Any]:
    version = await agent.config.resync()
    return {"applied_version": version}


async def collect_logs(agent: AgentHost, args: CollectLogsArgs) -> dict[str, Any]:
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


def builtin_commands(agent: AgentHost, on_update_request: Callable[[], None]) -> list[CommandSpec]:
    """The commands every agent knows, bound to the agent that runs them (``on_update_request``: the update
    watch's wake-up)."""
    return [
        CommandSpec("restart_app", NoArgs, partial(restart_app, agent), timeout_s=300),
        CommandSpec("restart_agent", NoArgs, partial(restart_agent, agent), ends_agent=True),
        CommandSpec("reboot", RebootArgs, partial(reboot, agent), needs_reason=True, ends_agent=True, timeout_s=400),
        CommandSpec("diagnose", NoArgs, partial(diagnose, agent)),
        CommandSpec("sync_config", NoArgs, partial(sync_config, agent)),
        CommandSpec("collect_logs", CollectLogsArgs, partial(collect_logs, agent)),
        update_command(
            agent, on_update_request
        ),  # agent/commands/update.py: a new hallfleet version, rolled back if unhealthy
    ]
