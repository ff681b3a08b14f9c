"""The payloads of queue ticketing (排队叫号): what happened to a ticket, per service and window, and nothing about
the person holding it.

The rule: a ticket travels as its number and its service code only. A ticket number is what the dispenser prints
("A017", "VIP003": a short prefix of letters and at most five digits), so a phone number, an ID number or a name
cannot pass for one; a service code is the queue system's short code for the matter ("A", "GS01"). The rating
pad binds a rating to the same number (``rating.submitted.service_id``), so the centre can put a ticket's wait
beside its rating without either side knowing who held it.

``at`` is the queue system's own time of the step: the agent may read a step late (its link or the queue system
was down), and the wait is measured between the queue system's stamps, never the agent's reading times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from protocol.bounds import Line, storable_time
from protocol.envelope import Frozen

TICKET_PATTERN = r"^[A-Z]{0,4}[0-9]{1,5}$"
SERVICE_PATTERN = r"^[A-Za-z0-9_-]{1,16}$"

TicketNo = Annotated[
    str,
    StringConstraints(pattern=TICKET_PATTERN),
    Field(description="The number printed on the ticket: up to 4 capital letters then 1-5 digits (A017, VIP003)"),
]
ServiceCode = Annotated[
    str,
    StringConstraints(pattern=SERVICE_PATTERN),
    Field(description="The queue system's code of the service (事项/业务类别): letters, digits, _ and -, 1-16"),
]
Window = Annotated[Line, Field(min_length=1, max_length=32, description="The window as the queue system names it")]


def _storable(value: datetime) -> datetime:
    if not storable_time(value):
        raise ValueError("a time with its offset, between 1970 and 2100")
    return value


StepTime = Annotated[
    datetime, AfterValidator(_storable), Field(description="The queue system's time of this step, with its offset")
]
Channel = Literal["walk_in", "appointment", "priority"]
"""How the ticket was taken: at the dispenser, for an appointment (预约取号, QP 000:359-363), or through the
green channel for special groups (绿色通道, QP 000:351)."""


class TicketIssued(Frozen):
    """``queue.ticket_issued``: a dispenser printed a ticket; its wait starts."""

    ticket: TicketNo
    service: ServiceCode
    at: StepTime
    channel: Channel = Field(default="walk_in", description="walk_in, appointment (预约) or priority (绿色通道)")


class TicketCalled(Frozen):
    """``queue.ticket_called``: a window called the ticket; its wait ends at the first call."""

    ticket: TicketNo
    service: ServiceCode
    at: StepTime
    window: Window
    recall: bool = Field(default=False, description="Called again (重呼): the wait ended at the first call")


class TicketServed(Frozen):
    """``queue.ticket_served``: the window finished the service (办结); the rating pad invites the rating."""

    ticket: TicketNo
    service: ServiceCode
    at: StepTime
    window: Window


class TicketTransferred(Frozen):
    """``queue.ticket_transferred``: the window passed the ticket on to another service's queue (转移); a new wait
    starts there, measured against the new service's limit."""

    ticket: TicketNo
    service: ServiceCode = Field(description="The service it leaves")
    at: StepTime
    window: Window | None = Field(default=None, description="The window that passed it on, when it was called")
    to_service: ServiceCode = Field(description="The service whose queue it joins")


class TicketAbandoned(Frozen):
    """``queue.ticket_abandoned``: the ticket ends unserved: not there when called (过号), cancelled or left
    before a call, or still waiting when the queue system closed the day."""

    ticket: TicketNo
    service: ServiceCode
    at: StepTime
    reason: Literal["no_show", "cancelled", "day_closed"]
    window: Window | None = Field(default=None, description="The window that called it (no_show)")


QueueStep = TicketIssued | TicketCalled | TicketServed | TicketTransferred | TicketAbandoned
QUEUE_EVENTS: dict[str, type[QueueStep]] = {
    "queue.ticket_issued": TicketIssued,
    "queue.ticket_called": TicketCalled,
    "queue.ticket_served": TicketServed,
    "queue.ticket_transferred": TicketTransferred,
    "queue.ticket_abandoned": TicketAbandoned,
}
"""Event type -> payload: registered in protocol/events.py's REGISTRY, all on the critical lane (a wait is a
figure the hall is judged by, never telemetry to drop)."""
