"""Check, run and acknowledge commands. Each state goes out as a ``command.ack`` event through the
durable outbox; the id is remembered before the command runs, so a redelivered command never runs
twice, across restarts too."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pydantic import ValidationError

from agent.commands.registry import CommandFailed, CommandSpec, Registry
from agent.device import DeviceContext
from protocol.commands import Command, CommandAck, CommandState
from protocol.envelope import Frozen

log = logging.getLogger(__name__)
QUEUE_MAX = 100


class CommandRunner:
    def __init__(self, device: DeviceContext, registry: Registry) -> None:
        self.device = device
        self.registry = registry
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_MAX)

    def offer(self, raw: bytes) -> None:
        """From the MQTT link (loop thread). Full queue: the broker redelivers after a reconnect."""
        try:
            self.queue.put_nowait(raw)
        except asyncio.QueueFull:
            log.error("command queue full (%d): dropping one delivery; the centre will see it unacked", QUEUE_MAX)

    async def run(self) -> None:
        await self._resume_after_restart()
        while True:
            raw = await self.queue.get()
            try:
                await self.handle(raw)
            except Exception:  # one bad command must not stop the next ones
                log.exception("command handling failed")

    async def handle(self, raw: bytes) -> None:
        try:
            cmd = Command.model_validate_json(raw)
        except ValidationError as exc:
            await self._refuse_unparsed(raw, exc)
            return
        seen = await self.device.state.command_state(cmd.id)
        if seen is not None:  # a redelivery (QoS 1, reconnect, a re-publish): its acks already went out
            log.info("command %s (%s) already taken (%s): not running it again", cmd.id, cmd.name, seen)
            return
        spec, args, refusal = self._check(cmd)
        if spec is None or args is None:
            await self._record(cmd, CommandState.REJECTED, reason=refusal)
            return
        await self._record(cmd, CommandState.DELIVERED)
        await self._record(cmd, CommandState.RUNNING)
        try:
            result = await asyncio.wait_for(spec.handler(args), spec.timeout_s)
        except CommandFailed as exc:
            await self._record(cmd, CommandState.FAILED, reason=str(exc))
            return
        except TimeoutError:
            await self._record(cmd, CommandState.FAILED, reason=f"timed out after {spec.timeout_s:.0f} s")
            return
        except Exception as exc:
            log.exception("command %s crashed", cmd.name)
            await self._record(cmd, CommandState.FAILED, reason=f"error: {exc!r}"[:2000])
            return
        if not spec.ends_agent:  # those are acknowledged by the next start
            await self._record(cmd, CommandState.SUCCEEDED, result=result)

    def _check(self, cmd: Command) -> tuple[CommandSpec | None, Frozen | None, str]:
        spec = self.registry.get(cmd.name)
        if spec is None:
            return (
                None,
                None,
                f"unknown command {cmd.name!r}; this device knows: {', '.join(self.registry.names())}",
            )
        if spec.needs_reason and not cmd.reason.strip():
            return None, None, f"{cmd.name} needs a reason"
        if self.device.clock_synced() and self.device.clock.now() > cmd.expires_at:
            return None, None, f"expired at {cmd.expires_at.isoformat()}"
        try:
            return spec, spec.args.model_validate(cmd.args), ""
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()[:5])
            return None, None, f"invalid arguments: {errors}"

    async def _record(
        self, cmd: Command, state: CommandState, *, reason: str = "", result: dict[str, Any] | None = None
    ) -> None:
        """Remember the state first, then acknowledge it durably."""
        await self.device.state.set_command_state(cmd.id, cmd.name, state.value)
        ack = CommandAck(command_id=cmd.id, name=cmd.name, state=state, reason=reason, result=result)
        await self.device.emit("command.ack", ack)
        log.info("command %s %s -> %s %s", cmd.id, cmd.name, state.value, reason)

    async def _refuse_unparsed(self, raw: bytes, exc: ValidationError) -> None:
        """Answer a command we cannot read, if at least its id and name can be read."""
        try:
            obj = json.loads(raw)
            command_id, name = str(obj["id"]), str(obj.get("name", ""))[:40]
            ack = CommandAck(
                command_id=command_id,
                name=name,
                state=CommandState.REJECTED,
                reason=f"malformed command: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}",
            )
        except (ValueError, KeyError, TypeError, ValidationError):
            log.warning("unreadable command ignored: %r", raw[:200])
            return
        if await self.device.state.command_state(command_id) is None:
            await self.device.state.set_command_state(command_id, name, CommandState.REJECTED.value)
            await self.device.emit("command.ack", ack)

    async def _resume_after_restart(self) -> None:
        """Commands that were running when the agent stopped: the agent-ending ones did what they
        said; any other was interrupted."""
        for command_id, name in await self.device.state.commands_in(CommandState.RUNNING.value):
            spec = self.registry.get(name)
            state, reason = (
                (CommandState.SUCCEEDED, "")
                if spec and spec.ends_agent
                else (CommandState.FAILED, "interrupted by an agent restart")
            )
            await self.device.state.set_command_state(command_id, name, state.value)
            result = {"boot_id": self.device.boot_id} if state is CommandState.SUCCEEDED else None
            await self.device.emit(
                "command.ack",
                CommandAck(command_id=command_id, name=name, state=state, reason=reason, result=result),
            )
