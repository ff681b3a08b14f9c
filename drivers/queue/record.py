"""What a hall's queue system (排队叫号) tells about its tickets, and the one method an adapter to it needs.

The adapter interface (``QueueSystem``) has one required method, ``records(after, limit)``: the steps the queue
system logged after record number ``after``, oldest first, at most ``limit``. Record numbers only grow, so the
agent keeps the last one it turned into an event and asks again from there after an outage or a restart:
nothing the queue system logged while the agent, the link or the centre was down is lost. ``aclose()`` ends
the adapter's connection.

A record the adapter cannot read (a field missing, a ticket number that is not one) comes back as a
``BadRecord`` with its number and what is wrong, so the agent can report it and go on past it instead of
asking for it for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import Field

from protocol.bounds import Int64, Line
from protocol.envelope import Frozen
from protocol.queueing import Channel, ServiceCode, StepTime, TicketNo, Window

Step = Literal["issued", "called", "served", "transferred", "abandoned"]


class QueueRecord(Frozen):
    """One step of one ticket as the queue system logged it (its local API's record, in JSON)."""

    no: Int64 = Field(description="The queue system's record number: grows with every step it logs")
    step: Step
    ticket: TicketNo
    service: ServiceCode
    at: StepTime
    window: Window | None = Field(default=None, description="called, served; transferred and no_show from a window")
    dispenser: Line | None = Field(default=None, max_length=64, description="issued: the dispenser that printed it")
    channel: Channel = Field(default="walk_in", description="issued: walk_in, appointment or priority")
    recall: bool = Field(default=False, description="called: a second call of the same ticket")
    to_service: ServiceCode | None = Field(default=None, description="transferred: the service it goes to")
    reason: Literal["no_show", "cancelled", "day_closed"] | None = Field(default=None, description="abandoned: why")


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record the adapter could not read: its number (to go past it) and what was wrong with it (never its
    values: a queue system may hold a citizen's name or phone number in a field it should not)."""

    no: int
    error: str


class QueueSystemError(Exception):
    """The queue system cannot be read now (down, refusing, answering nonsense); the message says what to check.
    The agent retries with backoff: the records wait in the queue system."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"queue system {source}: {reason}")
        self.source = source
        self.reason = reason


class QueueSystem(Protocol):
    async def records(self, after: int, limit: int) -> Sequence[QueueRecord | BadRecord]:
        """The records numbered above ``after``, oldest first, at most ``limit``; QueueSystemError if unreachable."""
        ...

    async def aclose(self) -> None: ...
