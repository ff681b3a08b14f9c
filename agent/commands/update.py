"""The ``update`` command: move this agent to another hallfleet version from the centre's package store.

The agent checks the request and starts the updater (agent/updater.py), which installs, switches, restarts and
rolls back; the agent that runs afterwards (the new version, or the old one again) reads the updater's
``result.json``, publishes ``device.updated`` and gives the command its final ack.

The command is declared ``ends_agent`` (its handler returns once the updater is started, and the runner sends no
success of its own); at the next start, before the runner resumes interrupted commands, :func:`resume_update`
moves a pending update's state from ``running`` to ``updating`` so it is answered by the updater's result, not
as "interrupted" or as a blind success.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from pydantic import Field, field_validator

from agent.commands.host import AgentHost
from agent.commands.registry import CommandFailed, CommandSpec
from agent.commands.update_config import UpdateConfig
from agent.config import AgentConfig
from agent.dirwatch import DirWatch
from agent.tasks import first_of
from agent.updater import HEALTH, LAST_RESULT, REQUEST, RESULT, Request, current_link, read_json, write_json
from agent.version import agent_version
from protocol.commands import CommandAck, CommandState
from protocol.envelope import Frozen
from protocol.events import DeviceUpdated

__all__ = ["UpdateArgs", "UpdateConfig", "UpdateWatch", "resume_update", "update_command"]

log = logging.getLogger(__name__)
NAME = "update"
UPDATING = "updating"  # the command's state on the device between the restart and the updater's result


class UpdateArgs(Frozen):
    version: str = Field(min_length=1, max_length=64, description="A PEP 440 version, e.g. 1.5.0")
    store: str = Field(
        min_length=1, max_length=500, description="The centre's package store: https://.../simple or /path/wheels"
    )
    health_timeout_s: float = Field(default=120.0, ge=5, le=1800, description="How long the new version has")
    allow_downgrade: bool = False

    @field_validator("version", mode="before")
    @classmethod
    def _pep440(cls, v: object) -> object:
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)  # `hallfleet cmd send ... version=2` arrives as a JSON number
        if not isinstance(v, str):
            return v  # pydantic names the type error
        try:
            return str(Version(v))
        except InvalidVersion:
            raise ValueError(f"{v!r} is not a PEP 440 version (e.g. 1.5.0)") from None

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        if v.startswith(("http://", "https://")) or v.startswith("/"):
            return v
        raise ValueError("the package store is an http(s):// index URL or an absolute directory of wheels")


def state_dir(cfg: AgentConfig) -> Path:
    return cfg.update.state_dir or cfg.outbox.path.parent / "update"


def running_python() -> str:
    """This version's own python, resolved through the current link, so the updater keeps running the old code."""
    python = Path(sys.prefix).resolve() / "bin" / "python"
    return str(python) if python.exists() else sys.executable


async def update(agent: AgentHost, on_request: Callable[[], None], args: UpdateArgs) -> dict[str, Any]:
    cfg, state = agent.cfg.update, state_dir(agent.cfg)
    pending = Request.load(state / REQUEST)
    if pending is not None and time.time() < pending.deadline:
        raise CommandFailed(
            f"an update to {pending.to_version} is already running (command {pending.command_id}) 已有更新在进行"
        )
    current = agent_version()
    try:
        running = Version(current)
    except InvalidVersion:
        raise CommandFailed(f"this agent's own version {current!r} is not PEP 440: update it by reinstalling") from None
    wanted = Version(args.version)
    if wanted == running:
        raise CommandFailed(f"this device already runs {current} 已是该版本")
    if wanted < running and not args.allow_downgrade:
        raise CommandFailed(f"{args.version} is older than {current}: a downgrade needs allow_downgrade 降级需明确允许")
    link = current_link(cfg.root)
    if not link.is_symlink():
        raise CommandFailed(f"{link} is not a symlink: this device was not installed with versions side by side")
    command_id = await _running_command_id(agent)
    req = Request(
        command_id=command_id,
        from_version=current,
        to_version=args.version,
        store=args.store,
        health_timeout_s=args.health_timeout_s,
        root=str(cfg.root),
        state_dir=str(state),
        previous=str(link.resolve()),
        restart_command=cfg.restart_command,
        shared_site_packages=str(cfg.shared_site_packages) if cfg.shared_site_packages else None,
        install_timeout_s=cfg.install_timeout_s,
        keep_versions=cfg.keep_versions,
    )
    state.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT, HEALTH):
        (state / stale).unlink(missing_ok=True)
    req.save(state / REQUEST)
    try:
        await _launch(agent, cfg, state / REQUEST)
    except (OSError, CommandFailed) as exc:
        (state / REQUEST).unlink(missing_ok=True)
        raise CommandFailed(f"cannot start the updater: {exc}") from None
    on_request()  # the update watch follows it from here
    return {"from_version": current, "to_version": args.version}


async def _running_command_id(agent: AgentHost) -> str:
    """The handler is not given its command: it is the one ``update`` the runner has just marked running (the
    runner takes one command at a time, and earlier ones were settled at start)."""
    ids = [cid for cid, name in await agent.ctx.state.commands_in(CommandState.RUNNING.value) if name == NAME]
    if len(ids) != 1:
        raise CommandFailed(f"cannot tell which update command this is ({len(ids)} running)")
    return ids[0]


async def _launch(agent: AgentHost, cfg: UpdateConfig, request: Path) -> None:
    if cfg.launcher:
        proc = await asyncio.create_subprocess_exec(
            *cfg.launcher, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise CommandFailed(f"{' '.join(cfg.launcher)} exited {proc.returncode}: {out.decode()[-300:]}")
        return
    # Its own session: the agent's restart (a signal to the agent's process group) must not reach it.
    with (request.parent / "updater.out").open("ab") as log_file:
        child = await asyncio.create_subprocess_exec(
            running_python(),
            "-m",
            "agent.updater",
            str(request),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    agent.ctx.spawn(_reap(child), "updater")


async def _reap(child: asyncio.subprocess.Process) -> None:
    await child.wait()


async def resume_update(agent: AgentHost) -> None:
    """At start, before interrupted commands are resumed: an update in progress is answered by its result.
    Whatever goes wrong here is logged: the agent starts anyway."""
    try:
        await _resume(agent)
    except Exception:
        log.exception("could not settle the update in progress (see %s)", state_dir(agent.cfg))


async def _resume(agent: AgentHost) -> None:
    state = state_dir(agent.cfg)
    req = Request.load(state / REQUEST)
    for command_id, name in await agent.ctx.state.commands_in(CommandState.RUNNING.value):
        if name != NAME:
            continue
        if req is not None and command_id == req.command_id:
            await agent.ctx.state.set_command_state(command_id, NAME, UPDATING)
        else:  # stopped before its updater was started: nothing changed, and it must not pass for a success
            await agent.ctx.state.set_command_state(command_id, NAME, CommandState.FAILED.value)
            why = "interrupted by an agent restart before the updater started; nothing was changed"
            await agent.ctx.emit(
                "command.ack", CommandAck(command_id=command_id, name=NAME, state=CommandState.FAILED, reason=why)
            )
    if req is not None:
        await _finish_if_done(agent, req)


class UpdateWatch:
    """While an update is in progress: tell the updater when this agent is connected (health.json), and
    publish the result once the updater writes it.

    Nothing is polled: idle, the watch waits for the update command (``requested``); during an update it
    wakes on the state directory changing (inotify, agent/dirwatch.py), a new MQTT session, or the
    request's deadline. Only where inotify is missing does it look every POLL_S, and only during an update.
    """

    POLL_S = 1.0

    def __init__(self, agent: AgentHost) -> None:
        self.agent = agent
        self.requested = asyncio.Event()
        self.looks = 0  # how often the state directory was read (tests: none while idle)

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except Exception:  # a full disk or a mangled file must not take the agent down; try again later
                log.exception("update watch failed; trying again in 10 s")
                await asyncio.sleep(10)
                continue
            await self.requested.wait()
            self.requested.clear()

    async def _follow(self) -> None:
        """Until no update is in progress (no request, no recent result)."""
        state = state_dir(self.agent.cfg)
        self.looks += 1
        if Request.load(state / REQUEST) is None and _recent_until(state / LAST_RESULT) is None:
            return  # the usual case: no update, and no file watch either
        told: int | None = None
        with DirWatch(state, ignore=(HEALTH, f".{HEALTH}")) as changed:  # not our own writes
            while True:
                self.looks += 1
                req = Request.load(state / REQUEST)
                # After a rollback the old agent answers at start (the request is gone) and the updater still waits
                # to see it healthy: a recent result counts too.
                recent_until = _recent_until(state / LAST_RESULT)
                if req is None and recent_until is None:
                    return
                link = self.agent.link
                if link.is_up() and told != link.session:
                    _write_health(self.agent, state)
                    told = link.session
                if req is not None:
                    await _finish_if_done(self.agent, req)
                until = min(t for t in (req.deadline if req else None, recent_until) if t is not None)
                await self._next_change(changed, told, until - time.time())

    async def _next_change(self, changed: asyncio.Event | None, told: int | None, timeout_s: float) -> None:
        waits: list[Awaitable[Any]] = [self.agent.link.wait_session(-1 if told is None else told)]
        if changed is not None:
            waits.append(changed.wait())
        else:
            timeout_s = min(timeout_s, self.POLL_S)
        await first_of(*waits, timeout_s=max(0.0, timeout_s))
        if changed is not None:
            changed.clear()


def _recent_until(path: Path, within_s: float = 900.0) -> float | None:
    """When the last result stops counting as recent (None: there is none, or it is old)."""
    try:
        until = path.stat().st_mtime + within_s
    except OSError:
        return None
    return until if until > time.time() else None


def _write_health(agent: AgentHost, state: Path) -> None:
    health = {"version": agent_version(), "connected": True, "pid": os.getpid(), "at": time.time()}
    write_json(state / HEALTH, {**health, "session": agent.link.session})


async def _finish_if_done(agent: AgentHost, req: Request) -> None:
    state = state_dir(agent.cfg)
    res = read_json(state / RESULT)
    if res is None or res.get("command_id") != req.command_id:
        if time.time() < req.deadline:
            return
        res = {"outcome": "failed", "reason": "the updater gave no result before its deadline (updater.log)"}
    outcome = str(res.get("outcome", "failed"))
    if outcome not in ("updated", "rolled_back", "failed"):
        outcome = "failed"
    reason = str(res.get("reason", ""))[:1000]
    done = await agent.ctx.state.command_state(req.command_id)
    if done in (CommandState.SUCCEEDED.value, CommandState.FAILED.value):
        _clean(state, res)  # answered already (a crash before the files went): do not answer twice
        return
    event = DeviceUpdated(
        command_id=req.command_id,
        from_version=req.from_version,
        to_version=req.to_version,
        outcome=outcome,
        reason=reason,
    )
    ok = outcome == "updated"
    state_now = CommandState.SUCCEEDED if ok else CommandState.FAILED
    await agent.ctx.state.set_command_state(req.command_id, NAME, state_now.value)
    await agent.ctx.emit("device.updated", event)
    ack_result = {"from_version": req.from_version, "to_version": req.to_version, "outcome": outcome}
    prefix = {"rolled_back": "rolled back 已回滚: ", "failed": "update failed 更新失败: "}.get(outcome, "")
    await agent.ctx.emit(
        "command.ack",
        CommandAck(
            command_id=req.command_id,
            name=NAME,
            state=state_now,
            result=ack_result,
            reason="" if ok else f"{prefix}{reason}"[:2000],
        ),
    )
    _clean(state, res)


def _clean(state: Path, res: dict[str, Any]) -> None:
    write_json(state / LAST_RESULT, res)
    for name in (RESULT, REQUEST):
        (state / name).unlink(missing_ok=True)


def update_command(agent: AgentHost, on_request: Callable[[], None]) -> CommandSpec:
    """``on_request``: called once the request is written and the updater started (UpdateWatch.requested.set)."""
    return CommandSpec(NAME, UpdateArgs, partial(update, agent, on_request), ends_agent=True, timeout_s=120)
