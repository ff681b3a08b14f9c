"""The simulated A4 printer: a real IPP backend, not a mock. It answers Get-Printer-Attributes, Print-Job and
Get-Job-Attributes over HTTP on a real socket with the project's own codec, so the kiosk's IPP client
(drivers/ipp/client.py) runs against it unchanged; tests/test_ipp.py runs the same client assertions against
it and against CUPS's ippeveprinter, so it cannot drift from a real printer. The demo, the fleet simulator and
the tests use it where ippeveprinter (which needs D-Bus and Avahi) is too heavy for many kiosks.

The rule: toner, the waste tank, the paper and the page counters change only by pages printed (counted from
the PWG Raster document, drivers/ipp/raster.py) or by a technician's hand (``set_supply``, ``set_tray``),
never by the clock. The model, kept to what the kiosk must report:

- supplies as ippeveprinter has them: a toner waste tank (fills) and black toner (empties), ``printer-supply``
  in percent; each page takes ``100 / toner_pages`` % of toner and puts ``100 / waste_pages`` % in the tank;
- trays: ``main`` (sheets known, A4 by default) and a ``by-pass-tray`` whose level the printer cannot sense
  (-2, unknown), as on most office printers; a page takes a sheet from the main tray;
- state reasons with ippeveprinter's thresholds: toner-low below 10 %, toner-empty at 0, marker-waste-
  almost-full above 90 %, marker-waste-full at 100, media-low under 25 sheets, media-empty at 0; any of the
  stopping ones puts the printer in ``stopped`` (with -error), the others are -warning;
- a job prints what paper and toner allow and is ``aborted`` if that is less than it asked: a real printer
  would hold it until refilled, which the kiosk cannot tell apart from a slow job in one reading.

Unlike ippeveprinter it keeps lifetime page counters (printer-impressions-completed and friends), as real
printers do. It speaks ipp:// only (no TLS: the ipps tests stay on ippeveprinter).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from drivers.http1 import HttpError, read_request, write_body, write_json
from drivers.ipp.codec import (
    GET_JOB_ATTRIBUTES,
    GET_PRINTER_ATTRIBUTES,
    PRINT_JOB,
    Attribute,
    AttributeGroup,
    Collection,
    IppError,
    IppMessage,
    Tag,
    decode,
    encode,
)
from drivers.ipp.raster import RasterError, count_pages

log = logging.getLogger(__name__)

A4 = "iso_a4_210x297mm"
TONER, WASTE = "Black Toner", "Toner Waste Tank"
FORMATS = ("application/octet-stream", "image/pwg-raster")  # octet-stream: sniffed, and only PWG Raster is known
MAX_DOCUMENT = 16 * 1024 * 1024
MAX_JOBS = 200  # jobs kept for Get-Job-Attributes, oldest dropped first
LOW_TONER_PCT, ALMOST_FULL_PCT, LOW_SHEETS = 10, 90, 25  # ippeveprinter's thresholds
STOPPING = frozenset({"toner-empty", "marker-waste-full", "media-empty"})
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

OK, BAD_REQUEST, NOT_FOUND = 0x0000, 0x0400, 0x0406
VALUES_NOT_SUPPORTED, FORMAT_ERROR = 0x040B, 0x0411
NOT_SUPPORTED, VERSION_NOT_SUPPORTED = 0x0501, 0x0503
IDLE, STOPPED = 3, 5
COMPLETED, ABORTED = 9, 8


@dataclass(slots=True)
class _Supply:
    description: str
    type: str  # printer-supply type: toner, wasteToner
    receptacle: bool  # fills up (the waste tank) rather than empties
    level: float  # percent: what is left, or how full a receptacle is
    per_page: float  # percent one page takes (or adds)
    colorant: str

    @property
    def reported(self) -> int:
        """Whole percent, as printers send it: a cartridge reads 0 only once it is spent, a tank 100 only once
        it is full (a rounding that said "empty" one page early would stop a kiosk that still prints)."""
        return math.floor(self.level) if self.receptacle else math.ceil(self.level)

    def entry(self, index: int) -> bytes:
        cls = "receptacleThatIsFilled" if self.receptacle else "supplyThatIsConsumed"
        return (
            f"index={index};class={cls};type={self.type};unit=percent;maxcapacity=100;level={self.reported};"
            f"colorantname={self.colorant};"
        ).encode()


@dataclass(slots=True)
class _Tray:
    name: str
    type: str  # printer-input-tray type
    capacity: int  # sheets; -2 unknown
    sheets: int  # -2: the printer cannot sense it
    size: str  # media loaded ("" none)
    media_type: str

    def entry(self) -> bytes:
        return (
            f"type={self.type};mediafeed=0;mediaxfeed=0;maxcapacity={self.capacity};level={self.sheets};"
            f"status=0;name={self.name}"
        ).encode()


@dataclass(frozen=True, slots=True)
class Job:
    """One Print-Job as the printer keeps it."""

    id: int
    name: str
    pages: int  # asked for (pages x copies)
    printed: int
    state: int  # COMPLETED or ABORTED
    reasons: tuple[str, ...]


class SimulatedA4Printer:
    """One simulated A4 laser printer. Stage conditions with ``set_supply`` / ``set_tray``; read ``pages``."""

    def __init__(
        self,
        *,
        model: str = "HallFleet Kiosk A4",
        toner_pct: float = 75.0,
        waste_pct: float = 25.0,
        sheets: int = 250,
        tray_capacity: int = 250,
        toner_pages: float = 3000.0,
        waste_pages: float = 15000.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if toner_pages <= 0 or waste_pages <= 0:
            raise ValueError("toner_pages and waste_pages must be above 0")
        self.model = model
        self.supplies = [
            _Supply(WASTE, "wasteToner", True, waste_pct, 100.0 / waste_pages, "unknown"),
            _Supply(TONER, "toner", False, toner_pct, 100.0 / toner_pages, "black"),
        ]
        self.trays = [
            _Tray("main", "sheetFeedAutoRemovableTray", tray_capacity, min(sheets, tray_capacity), A4, "stationery"),
            _Tray("by-pass-tray", "sheetFeedAutoNonRemovableTray", 50, -2, A4, "stationery"),
        ]
        self.pages = 0  # lifetime impressions
        self.jobs: deque[Job] = deque(maxlen=MAX_JOBS)
        self._clock = clock
        self._started = clock()
        self._next_job = 1

    # -- what a technician does at the printer -------------------------------------------------------------
    def set_supply(self, description: str, level: float) -> None:
        """Set one supply by its printer-supply-description ("Black Toner", "Toner Waste Tank")."""
        supply = next((s for s in self.supplies if s.description == description), None)
        if supply is None:
            raise KeyError(f"no supply {description!r}; the printer has {[s.description for s in self.supplies]}")
        if not 0 <= level <= 100:
            raise ValueError(f"a supply level is 0..100 %, not {level}")
        supply.level = float(level)

    def set_tray(self, tray: str = "main", sheets: int = 250, size: str = A4, media_type: str = "stationery") -> None:
        """Load ``sheets`` of ``size`` in ``tray`` (0 = empty)."""
        found = next((t for t in self.trays if t.name == tray), None)
        if found is None:
            raise KeyError(f"no tray {tray!r}; the printer has {[t.name for t in self.trays]}")
        if found.capacity >= 0 and not 0 <= sheets <= found.capacity:
            raise ValueError(f"tray {tray!r} holds 0..{found.capacity} sheets, not {sheets}")
        found.sheets, found.size, found.media_type = (sheets if found.capacity >= 0 else -2), size, media_type

    def supply(self, description: str) -> int:
        """A supply's level as the printer reports it (whole percent)."""
        return next(s.reported for s in self.supplies if s.description == description)

    def sheets(self, tray: str = "main") -> int:
        return next(t.sheets for t in self.trays if t.name == tray)

    # -- state ----------------------------------------------------------------------------------------------
    def reasons(self) -> list[str]:
        """printer-state-reasons without severity suffixes, in a stable order."""
        out = []
        for s in self.supplies:
            level = s.reported
            if s.receptacle:
                out += (
                    ["marker-waste-full"] if level >= 100 else ["marker-waste-almost-full"] * (level > ALMOST_FULL_PCT)
                )
            else:
                out += ["toner-empty"] if level <= 0 else ["toner-low"] * (level < LOW_TONER_PCT)
        sensed = [t for t in self.trays if t.sheets >= 0]
        if any(t.sheets == 0 for t in sensed):
            out.append("media-empty")
        elif any(t.sheets < LOW_SHEETS for t in sensed):
            out.append("media-low")
        return out

    @property
    def state(self) -> int:
        return STOPPED if STOPPING.intersection(self.reasons()) else IDLE

    # -- printing -------------------------------------------------------------------------------------------
    def print_document(self, name: str, pages: int) -> Job:
        """Print ``pages`` pages now: each takes toner, fills the tank and takes a sheet of the main tray."""
        toner, waste = (
            next(s for s in self.supplies if not s.receptacle),
            next(s for s in self.supplies if s.receptacle),
        )
        tray = self.trays[0]
        printed = 0
        while printed < pages and toner.reported > 0 and waste.reported < 100 and tray.sheets > 0:
            toner.level = max(0.0, toner.level - toner.per_page)
            waste.level = min(100.0, waste.level + waste.per_page)
            tray.sheets -= 1
            printed += 1
        self.pages += printed
        done = printed == pages
        why = () if done else ("aborted-by-system", *(r for r in self.reasons() if r in STOPPING))
        job = Job(
            self._next_job, name, pages, printed, COMPLETED if done else ABORTED, why or ("job-completed-successfully",)
        )
        self._next_job += 1
        self.jobs.append(job)
        return job

    # -- IPP -------------------------------------------------------------------------------------------------
    def handle(self, request: IppMessage, uri: str) -> IppMessage:
        """The answer to one request addressed to this printer (its URI as the request named it)."""
        if request.version[0] not in (1, 2):
            return _status(request, VERSION_NOT_SUPPORTED, "IPP/1.1 or 2.x")
        op = request.attributes(Tag.OPERATION)
        if "attributes-charset" not in op or "printer-uri" not in op:
            return _status(request, BAD_REQUEST, "attributes-charset and printer-uri are required")
        if request.code == GET_PRINTER_ATTRIBUTES:
            asked = op.get("requested-attributes")
            wanted = {str(v) for v in asked.values} if asked else {"all"}
            attrs = tuple(a for a in self._attributes(uri) if {"all", "printer-description", a.name} & wanted)
            return _answer(request, OK, AttributeGroup(Tag.PRINTER, attrs))
        if request.code == PRINT_JOB:
            return self._print_job(request, op, uri)
        if request.code == GET_JOB_ATTRIBUTES:
            job_id = op.get("job-id")
            job = next((j for j in self.jobs if job_id is not None and j.id == job_id.value), None)
            if job is None:
                return _status(request, NOT_FOUND, "no such job")
            return _answer(request, OK, _job_group(job, uri))
        return _status(request, NOT_SUPPORTED, f"operation 0x{request.code:04x}")

    def _print_job(self, request: IppMessage, op: dict[str, Attribute], uri: str) -> IppMessage:
        fmt_attr = op.get("document-format")
        fmt = str(fmt_attr.value) if fmt_attr else "application/octet-stream"
        if fmt not in FORMATS:
            # ippeveprinter's answer (not document-format-not-supported, which Print-Job never gets from it)
            return _status(request, VALUES_NOT_SUPPORTED, "Unsupported document-format mimeMediaType value.")
        copies_attr = request.attributes(Tag.JOB).get("copies")
        copies = copies_attr.value if copies_attr else 1
        if not isinstance(copies, int) or not 1 <= copies <= 99:
            return _status(request, VALUES_NOT_SUPPORTED, "copies is 1..99")
        try:
            pages = count_pages(request.data)
        except RasterError as exc:
            return _status(request, FORMAT_ERROR, str(exc))
        name_attr = op.get("job-name")
        job = self.print_document(str(name_attr.value)[:255] if name_attr else "", pages * copies)
        return _answer(request, OK, _job_group(job, uri))

    def _attributes(self, uri: str) -> list[Attribute]:
        reasons = self.reasons()
        stopped = STOPPING.intersection(reasons)
        suffixed = [f"{r}-error" if r in STOPPING else f"{r}-warning" for r in reasons] or ["none"]
        ready = [t.size for t in self.trays if t.size and t.sheets != 0]
        sheets = self.pages  # simplex: one sheet per impression
        mono = Collection((Attribute.of("monochrome", Tag.INTEGER, self.pages),))
        return [
            Attribute.of("printer-uri-supported", Tag.URI, uri),
            Attribute.of("uri-security-supported", Tag.KEYWORD, "none"),
            Attribute.of("uri-authentication-supported", Tag.KEYWORD, "none"),
            Attribute.of("printer-name", Tag.NAME, "Kiosk A4"),
            Attribute.of("printer-make-and-model", Tag.TEXT, self.model),
            Attribute.of("printer-state", Tag.ENUM, STOPPED if stopped else IDLE),
            Attribute.of("printer-state-reasons", Tag.KEYWORD, *suffixed),
            Attribute.of(
                "printer-state-message", Tag.TEXT, f"Stopped: {', '.join(sorted(stopped))}." if stopped else "Idle."
            ),
            Attribute.of("printer-is-accepting-jobs", Tag.BOOLEAN, True),
            Attribute.of("printer-up-time", Tag.INTEGER, max(1, int(self._clock() - self._started))),
            Attribute.of("printer-supply", Tag.OCTET_STRING, *(s.entry(i + 1) for i, s in enumerate(self.supplies))),
            Attribute.of("printer-supply-description", Tag.TEXT, *(s.description for s in self.supplies)),
            Attribute.of("printer-input-tray", Tag.OCTET_STRING, *(t.entry() for t in self.trays)),
            Attribute.of("media-source-supported", Tag.KEYWORD, *(t.name for t in self.trays)),
            *([Attribute.of("media-ready", Tag.KEYWORD, *dict.fromkeys(ready))] if ready else []),
            Attribute.of("printer-impressions-completed", Tag.INTEGER, self.pages),
            Attribute.of("printer-impressions-completed-col", Tag.BEGIN_COLLECTION, mono),
            Attribute.of("printer-media-sheets-completed", Tag.INTEGER, sheets),
            Attribute.of("queued-job-count", Tag.INTEGER, 0),
            Attribute.of("color-supported", Tag.BOOLEAN, False),
            Attribute.of("document-format-supported", Tag.MIME_MEDIA_TYPE, *FORMATS),
            Attribute.of("document-format-default", Tag.MIME_MEDIA_TYPE, FORMATS[0]),
            Attribute.of("operations-supported", Tag.ENUM, PRINT_JOB, GET_JOB_ATTRIBUTES, GET_PRINTER_ATTRIBUTES),
            Attribute.of("ipp-versions-supported", Tag.KEYWORD, "1.1", "2.0"),
            Attribute.of("charset-configured", Tag.CHARSET, "utf-8"),
            Attribute.of("charset-supported", Tag.CHARSET, "utf-8"),
            Attribute.of("natural-language-configured", Tag.NATURAL_LANGUAGE, "en"),
            Attribute.of("generated-natural-language-supported", Tag.NATURAL_LANGUAGE, "en"),
            Attribute.of("pdl-override-supported", Tag.KEYWORD, "attempted"),
        ]


def _operation_group(message: str = "") -> AttributeGroup:
    attrs = [
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
    ]
    if message:
        attrs.append(Attribute.of("status-message", Tag.TEXT, message[:255]))
    return AttributeGroup(Tag.OPERATION, tuple(attrs))


def _answer(request: IppMessage, code: int, *groups: AttributeGroup) -> IppMessage:
    return IppMessage(code, request.request_id, (_operation_group(), *groups), version=(1, 1))


def _status(request: IppMessage, code: int, message: str) -> IppMessage:
    return IppMessage(code, request.request_id, (_operation_group(message),), version=(1, 1))


def _job_group(job: Job, printer_uri: str) -> AttributeGroup:
    return AttributeGroup(
        Tag.JOB,
        (
            Attribute.of("job-id", Tag.INTEGER, job.id),
            Attribute.of("job-uri", Tag.URI, f"{printer_uri}/{job.id}"),
            Attribute.of("job-state", Tag.ENUM, job.state),
            Attribute.of("job-state-reasons", Tag.KEYWORD, *job.reasons),
            Attribute.of("job-impressions-completed", Tag.INTEGER, job.printed),
        ),
    )


class SimulatedIppServer:
    """One loopback HTTP server for any number of simulated printers, each at ``/ipp/print/<name>`` (the
    unnamed one at ``/ipp/print``): a fleet of kiosks shares one socket, not one each. ``async with``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.printers: dict[str, SimulatedA4Printer] = {}  # path -> printer
        self.requests = 0
        self._server: asyncio.Server | None = None

    def add(self, name: str = "", printer: SimulatedA4Printer | None = None) -> SimulatedA4Printer:
        """A printer at ``url(name)``; ``name`` is a path segment (letters, digits, . _ -)."""
        if name and not _NAME.fullmatch(name):
            raise ValueError(f"printer name {name!r}: 1-64 of letters, digits, '.', '_', '-'")
        path = _path(name)
        if path in self.printers:
            raise ValueError(f"a printer is already at {path}")
        self.printers[path] = printer or SimulatedA4Printer()
        return self.printers[path]

    def printer(self, name: str = "") -> SimulatedA4Printer:
        return self.printers[_path(name)]

    def url(self, name: str = "") -> str:
        return f"ipp://{self.host}:{self.port}{_path(name)}"

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> SimulatedIppServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=64 * 1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("simulated IPP printers on ipp://%s:%d/ipp/print/...", self.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if self._server is not None:
            await self._server.wait_closed()

    def close(self) -> None:
        """Stop listening now (a printer switched off: connections are refused from here on)."""
        if self._server is not None:
            self._server.close()

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            method, target, body = await asyncio.wait_for(read_request(reader, MAX_DOCUMENT), 10)
            if method != "POST":
                raise HttpError(405, "POST an application/ipp request to /ipp/print")
            answer = self._answer(target, body)
        except HttpError as exc:
            await write_json(writer, exc.status, {"error": exc.reason})
            return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        await write_body(writer, 200, "application/ipp", answer)

    def _answer(self, target: str, body: bytes) -> bytes:
        try:
            request = decode(body)
        except IppError as exc:
            raise HttpError(400, f"not an IPP request: {exc}") from None
        path = target.split("?", 1)[0]
        printer = self.printers.get(path)
        if printer is None:
            return encode(_status(request, NOT_FOUND, f"no printer at {path}"))
        uri = f"ipp://{self.host}:{self.port}{path}"
        try:
            return encode(printer.handle(request, uri))
        except IppError as exc:  # an answer we cannot encode is our bug: say so rather than drop the connection
            log.exception("simulated printer %s cannot answer", path)
            return encode(_status(request, 0x0500, f"internal error: {exc}"))


def _path(name: str) -> str:
    return "/ipp/print" + (f"/{name}" if name else "")
