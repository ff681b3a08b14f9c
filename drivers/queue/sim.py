"""The simulated queue system (排队叫号): a real backend, not a mock. It keeps tickets as a hall's queue PC does
(numbers per service, priority tickets first, one ticket at a window at a time), logs every step as a numbered
record and serves those records over the same local HTTP API the real driver reads (drivers/queue/http.py), on
a real socket. The demo, the fleet simulator and the tests drive it with ``issue``, ``call``, ``serve``,
``transfer``, ``no_show``, ``cancel`` and ``close_day``.

It also does what the hall's queue system does for the 好差评 pads: when a window calls a ticket it POSTs
``{"action": "start", "service_id": <ticket>}`` to that window's pad (agent/roles/rating.py, ``QueueServer``),
and ``end`` when the service is done, so a rating is bound to the very ticket number the queue events carry.
A pad that cannot be reached is counted (``pad_errors``) and the queue goes on: a pad is no queue's master.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from config.base import Section
from drivers.http1 import FetchError, HttpError, fetch, read_request, write_json
from drivers.queue.record import QueueRecord, Step
from protocol.queueing import Channel

log = logging.getLogger(__name__)

MAX_PAGE = 1000


class SimQueueConfig(Section):
    type: Literal["sim"] = Field(default="sim", description="Driver selector: the simulated queue system (demo, tests)")
    port: int = Field(default=0, ge=0, le=65535, description="Its HTTP port on the loopback (0: any free port)")
    services: dict[str, str] = Field(
        default_factory=lambda: {"A": "A", "B": "B", "C": "C"},
        description="Service code -> ticket prefix (A -> A001, A002 ...)",
    )


@dataclass(slots=True)
class _Ticket:
    ticket: str
    service: str
    channel: Channel
    queued_seq: int  # order in the hall's queues: priority first, then this


@dataclass(slots=True)
class _Hall:
    waiting: list[_Ticket] = field(default_factory=list)
    at_window: dict[str, _Ticket] = field(default_factory=dict)  # called, not yet served
    issued: dict[str, int] = field(default_factory=dict)  # per service, today


class SimQueueSystem:
    def __init__(
        self,
        clock: Callable[[], datetime],
        services: Mapping[str, str],
        *,
        pads: MutableMapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_records: int = 100_000,
    ) -> None:
        for code, prefix in services.items():
            QueueRecord.model_validate(
                {"no": 1, "step": "issued", "ticket": f"{prefix}001", "service": code, "at": clock()}
            )  # a service code or prefix the real API would refuse fails here, not in the middle of a demo
        self.clock = clock
        self.services = dict(services)
        self.pads: MutableMapping[str, str] = pads if pads is not None else {}  # window -> pad endpoint URL
        self.host = host
        self.port = port
        self.max_records = max_records
        self.records: list[QueueRecord] = []
        self.dropped = 0  # records dropped oldest-first past max_records (a real PC rotates its log too)
        self.pad_errors = 0
        self.requests = 0
        self._no = 0
        self._seq = 0
        self._hall = _Hall()
        self._server: asyncio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> SimQueueSystem:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("simulated queue system on http://%s:%d/records", self.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- the hall ----------------------------------------------------------------------------------
    def waiting(self, services: Sequence[str] | None = None) -> list[str]:
        return [t.ticket for t in self._order() if services is None or t.service in services]

    def issue(self, service: str, dispenser: str | None = None, channel: Channel = "walk_in") -> str:
        prefix = self.services[service]
        n = self._hall.issued.get(service, 0) + 1
        self._hall.issued[service] = n
        ticket = _Ticket(f"{prefix}{n:03d}", service, channel, self._next_seq())
        self._hall.waiting.append(ticket)
        self._log("issued", ticket, dispenser=dispenser, channel=channel)
        return ticket.ticket

    async def call(self, window: str, services: Sequence[str]) -> str | None:
        """The window calls the next ticket of its services (priority and appointment tickets first); None when
        nobody waits. A ticket still at the window is a no-show first (the staff moved on)."""
        if window in self._hall.at_window:
            await self.no_show(window)
        queue = [t for t in self._order() if t.service in services]
        if not queue:
            return None
        ticket = queue[0]
        self._hall.waiting.remove(ticket)
        self._hall.at_window[window] = ticket
        self._log("called", ticket, window=window)
        await self._tell_pad(window, {"action": "start", "service_id": ticket.ticket, "window": window})
        return ticket.ticket

    def recall(self, window: str) -> str | None:
        ticket = self._hall.at_window.get(window)
        if ticket is not None:
            self._log("called", ticket, window=window, recall=True)
        return None if ticket is None else ticket.ticket

    async def serve(self, window: str) -> str | None:
        """The window finished the ticket it called (办结): the pad invites the rating."""
        ticket = self._hall.at_window.pop(window, None)
        if ticket is None:
            return None
        self._log("served", ticket, window=window)
        await self._tell_pad(window, {"action": "end", "service_id": ticket.ticket, "window": window})
        return ticket.ticket

    def transfer(self, window: str, to_service: str) -> str | None:
        """The window passes its ticket to another service's queue; it keeps its number and queues anew."""
        if to_service not in self.services:
            raise KeyError(f"no service {to_service!r} in this queue system")  # the PC refuses it, the ticket stays
        ticket = self._hall.at_window.pop(window, None)
        if ticket is None:
            return None
        self._log("transferred", ticket, window=window, to_service=to_service)
        moved = _Ticket(ticket.ticket, to_service, ticket.channel, self._next_seq())
        self._hall.waiting.append(moved)
        return ticket.ticket

    async def no_show(self, window: str) -> str | None:
        ticket = self._hall.at_window.pop(window, None)
        if ticket is None:
            return None
        self._log("abandoned", ticket, window=window, reason="no_show")
        await self._tell_pad(window, {"action": "resume", "window": window})  # nothing to rate: the pad is idle
        return ticket.ticket

    def cancel(self, ticket_no: str) -> bool:
        """The citizen gave up before a call (left the hall, cancelled at the dispenser)."""
        for t in self._hall.waiting:
            if t.ticket == ticket_no:
                self._hall.waiting.remove(t)
                self._log("abandoned", t, reason="cancelled")
                return True
        return False

    def close_day(self) -> int:
        """End of the day: whoever still waits is abandoned (day_closed), and numbers start again tomorrow."""
        left = list(self._hall.waiting)
        for t in left:
            self._log("abandoned", t, reason="day_closed")
        self._hall = _Hall()
        return len(left)

    def _order(self) -> list[_Ticket]:
        return sorted(self._hall.waiting, key=lambda t: (t.channel == "walk_in", t.queued_seq))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _log(self, step: Step, t: _Ticket, **extra: Any) -> None:
        self._no += 1
        self.records.append(
            QueueRecord(no=self._no, step=step, ticket=t.ticket, service=t.service, at=self.clock(), **extra)
        )
        if len(self.records) > self.max_records:
            del self.records[0]
            self.dropped += 1

    async def _tell_pad(self, window: str, call: dict[str, Any]) -> None:
        url = self.pads.get(window)
        if url is None:
            return
        try:
            status, body = await fetch(url, method="POST", body=json.dumps(call).encode(), max_body=65_536, timeout_s=2)
            if status != 200:
                self.pad_errors += 1
                text = body.decode(errors="replace")
                log.warning("the pad of window %s refused %s: %d %s", window, call["action"], status, text)
        except (OSError, TimeoutError, FetchError) as exc:
            self.pad_errors += 1
            log.warning("the pad of window %s cannot be reached: %s", window, exc.__class__.__name__)

    # -- the local API -----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            status, body = 200, self._answer(*await asyncio.wait_for(read_request(reader, 4096), 5))
        except HttpError as exc:
            status, body = exc.status, {"error": exc.reason}
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        await write_json(writer, status, body)

    def _answer(self, method: str, target: str, _body: bytes) -> dict[str, Any]:
        url = urlsplit(target)
        if url.path != "/records":
            raise HttpError(404, "records are at /records")
        if method != "GET":
            raise HttpError(405, "GET /records?after=N&limit=M")
        query = parse_qs(url.query)
        try:
            after = int(query.get("after", ["0"])[0])
            limit = min(int(query.get("limit", ["100"])[0]), MAX_PAGE)
        except ValueError:
            raise HttpError(400, "after and limit are whole numbers") from None
        if after < 0 or limit < 1:
            raise HttpError(400, "after >= 0 and limit >= 1")
        # Records are in number order: find the page, not scan the day's log (a fleet's displays each poll every
        # second, and the log grows all day: the scan made every poll slower than the last).
        start = bisect.bisect_right(self.records, after, key=lambda r: r.no)
        page = self.records[start : start + limit]
        return {"records": [r.model_dump(mode="json", exclude_defaults=True) for r in page]}
