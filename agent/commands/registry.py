"""The command registry: each command names its argument model and its handler. Roles add theirs.

A handler takes its checked arguments only: whatever else it needs (a role's printer, the agent's config)
it was bound to when registered, so the registry knows nothing of the agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from protocol.envelope import Frozen

Handler = Callable[[Any], Awaitable[dict[str, Any]]]


class NoArgs(Frozen):
    """A command that takes no arguments refuses any."""


class CommandFailed(Exception):
    """The handler ran and could not do it: the command ends ``failed`` with this message."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    args: type[Frozen]
    handler: Handler
    needs_reason: bool = False
    timeout_s: float = 120.0
    # The command ends this agent (restart_agent, reboot): its success is acknowledged by the next
    # start, which finds it still "running" in the agent's state.
    ends_agent: bool = False


class Registry:
    def __init__(self, specs: list[CommandSpec] | None = None) -> None:
        self._specs: dict[str, CommandSpec] = {}
        for spec in specs or []:
            self.register(spec)

    def register(self, spec: CommandSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"command {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> CommandSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)
