"""Commands: centre -> device on ``.../cmd``; the device's answers travel as ``command.ack`` events on
``.../cmd/ack`` through its durable outbox, so an ack is never lost and is stored exactly once.

State machine (AWS Jobs-like)::

    queued -> delivered -> running -> succeeded | failed
    queued | delivered -> rejected          (unknown, invalid arguments, expired, already run ...)
    queued -> expired                       (the centre's clock: never reached the device in time)
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from protocol.bounds import Int32, Json, Line, Prose
from protocol.envelope import EventId, Frozen

CommandName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class CommandState(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


FINAL_STATES = frozenset({CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED, CommandState.EXPIRED})

# Which state may follow which; anything else (a late or duplicated ack) changes nothing.
NEXT_STATES: dict[CommandState, frozenset[CommandState]] = {
    CommandState.QUEUED: frozenset(
        {CommandState.DELIVERED, CommandState.RUNNING, CommandState.REJECTED, CommandState.EXPIRED}
        | {CommandState.SUCCEEDED, CommandState.FAILED}
    ),
    CommandState.DELIVERED: frozenset(
        {CommandState.RUNNING, CommandState.REJECTED, CommandState.SUCCEEDED, CommandState.FAILED}
    ),
    CommandState.RUNNING: frozenset({CommandState.SUCCEEDED, CommandState.FAILED}),
}


class Command(Frozen):
    """What the device receives on ``.../cmd``."""

    id: EventId = Field(description="Command id (UUIDv7); the device runs an id at most once")
    name: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    issuer: str = Field(min_length=1, max_length=64, description="Person or rule that issued it")
    reason: str = Field(default="", max_length=500)
    issued_at: AwareDatetime
    expires_at: AwareDatetime


class CommandAck(Frozen):
    """Payload of a ``command.ack`` event: one state change, with the result or why it was refused."""

    command_id: EventId = Field(description="The command this answers")
    name: Line = Field(max_length=40, description="The command's name")
    state: CommandState = Field(description="The state the command moved to on the device")
    result: dict[Line, Json] | None = Field(default=None, description="Structured output of a finished command")
    reason: Prose = Field(default="", max_length=2000, description="Why it was rejected or failed")


class DesiredConfig(Frozen):
    """Retained on ``.../cfg``: the configuration the centre wants the device to run."""

    version: int = Field(ge=1)
    issued_at: datetime
    issuer: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]


class ConfigReport(Frozen):
    """Payload of ``config.applied`` / ``config.rejected`` events."""

    version: Int32 = Field(description="The desired config version this reports on")
    errors: list[Annotated[Prose, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50, description="Why it was rejected, one entry per problem"
    )
