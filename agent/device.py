"""What a role, the command runner and the config applier get of the device: a narrow context.

Rule: nothing below the agent's composition (agent/agent.py) types against the whole ``Agent``. A role
emits events, reads the clock, keeps its own state, asks whether the link is up (or waits for it to change)
and starts owned jobs; that is all it can reach, so the agent's import graph has no cycle
(tests/test_import_graph.py) and a role can be built in a test from these parts alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from agent.state import StateStore
from protocol.envelope import Envelope, Frozen
from runtime.clock import Clock


class Emit(Protocol):
    async def __call__(self, event_type: str, payload: Frozen, counter: str | None = None) -> Envelope:
        """Take an event: returns once it is durably in the outbox (raises OutboxFull if it cannot be)."""
        ...


Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]


async def _never() -> None:
    """A link that never changes (a context built without one, as some tests build it)."""
    await asyncio.Event().wait()


@dataclass(frozen=True, slots=True)
class DeviceContext:
    site: str
    device: str
    boot_id: str
    clock: Clock
    state: StateStore
    emit: Emit
    spawn: Spawn  # an owned background job, cancelled when the agent stops
    link_up: Callable[[], bool]  # the MQTT link is connected now
    clock_synced: Callable[[], bool]  # the wall clock is NTP-synchronised
    link_changed: Callable[[], Awaitable[None]] = _never  # returns at the link's next connect or disconnect
