"""The kiosk's A4 printer over IPP: one Get-Printer-Attributes per reading, spoken directly; and
Print-Job, the kiosk application's print path (the demo's citizens print through it).

Why not pyipp or CUPS: pyipp reads only ``marker-*`` (not ``printer-supply``) and a kiosk has no
CUPS queue to ask; one request over HTTP/1.1 with asyncio streams needs no dependency.

``get_status`` never raises for a printer problem: an unreachable printer (refused, timed out,
TLS failure, HTTP error, not IPP, an IPP error status) is an ``A4Status`` with
``reachable=False`` and the reason in ``error``, because for a 24-hour kiosk an absent printer is
a reading to report, not an exception for every caller to remember. Only cancellation escapes.
``print_job`` keeps the same rule: a refused or lost job is a ``JobResult`` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from config.base import Section
from drivers import http1
from drivers.ipp.codec import (
    GET_JOB_ATTRIBUTES,
    GET_PRINTER_ATTRIBUTES,
    PRINT_JOB,
    IppError,
    IppMessage,
    Tag,
    decode,
    encode_get_printer_attributes,
    encode_print_job,
)
from drivers.ipp.status import REQUESTED, A4Status, Thresholds, parse_status

MAX_RESPONSE = 4 * 1024 * 1024  # the attributes we ask for are a few KB; a printer's "all" about 60 KB
_DEFAULT_PORTS = {"ipp": 631, "ipps": 631, "http": 80, "https": 443}
_request_ids = itertools.count(1)

#: Status codes by name (RFC 8011 13.1); the simulated printer answers with the same table.
STATUS_NAMES = {
    0x0400: "client-error-bad-request",
    0x0401: "client-error-forbidden",
    0x0402: "client-error-not-authenticated",
    0x0403: "client-error-not-authorized",
    0x0404: "client-error-not-possible",
    0x0406: "client-error-not-found",
    0x040A: "client-error-document-format-not-supported",
    0x040B: "client-error-attributes-or-values-not-supported",
    0x0411: "client-error-document-format-error",
    0x0500: "server-error-internal-error",
    0x0501: "server-error-operation-not-supported",
    0x0502: "server-error-service-unavailable",
    0x0503: "server-error-version-not-supported",
    0x0504: "server-error-device-error",
    0x0507: "server-error-busy",
}
OPERATION_NAMES = {
    PRINT_JOB: "Print-Job", GET_JOB_ATTRIBUTES: "Get-Job-Attributes", GET_PRINTER_ATTRIBUTES: "Get-Printer-Attributes"
}  # fmt: skip
JOB_STATES = {
    3: "pending", 4: "pending-held", 5: "processing", 6: "processing-stopped", 7: "canceled", 8: "aborted",
    9: "completed",
}  # fmt: skip


class A4PrinterConfig(Section):
    type: Literal["ipp"] = Field(default="ipp", description="Driver: an IPP (IPP Everywhere / AirPrint) printer")
    url: str = Field(
        description="Printer URI, e.g. ipp://192.168.1.20/ipp/print or ipps://printer.local:631/ipp/print "
        "(http:// and https:// are accepted as the same thing)"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Whole request, connect to last byte")
    ca_file: Path | None = Field(
        default=None,
        description="For ipps://: CA bundle, or the printer's own self-signed certificate (PEM) to pin it; "
        "the system CAs when absent",
    )
    verify_tls: bool = Field(
        default=True,
        description="Check an ipps:// printer's certificate and name. Printers mostly ship self-signed "
        "certificates: pin one with ca_file rather than turning this off",
    )
    low_pct: float = Field(default=10.0, ge=0, le=100, description="A consumable at or below this % is 'low'")
    almost_full_pct: float = Field(
        default=90.0, ge=0, le=100, description="A waste receptacle at or above this % is 'almost-full'"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"scheme must be ipp, ipps, http or https, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            parts.port  # noqa: B018  # raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return value

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("ipps", "https")

    @property
    def printer_uri(self) -> str:
        """The URL as IPP names it in printer-uri (ipp/ipps scheme)."""
        parts = urlsplit(self.url)
        scheme = {"http": "ipp", "https": "ipps"}.get(parts.scheme, parts.scheme)
        return parts._replace(scheme=scheme).geturl()


class _NoAnswer(Exception):
    """The printer did not give a usable IPP answer; the message says why."""


async def get_status(cfg: A4PrinterConfig) -> A4Status:
    """One reading of the printer. Never raises for printer problems (see the module docstring)."""
    request_id = _next_request_id()
    answer = await _ask(cfg, encode_get_printer_attributes(cfg.printer_uri, REQUESTED, request_id), request_id)
    if isinstance(answer, str):
        return A4Status.unreachable(answer)
    thresholds = Thresholds(low_pct=cfg.low_pct, almost_full_pct=cfg.almost_full_pct)
    return parse_status(answer.attributes(Tag.PRINTER), thresholds)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What the printer said to one Print-Job: ``accepted`` with its job id and state, or why not."""

    accepted: bool
    job_id: int | None = None
    state: str = "unknown"  # pending, processing, completed, aborted... (RFC 8011 5.3.7)
    error: str | None = None


async def print_job(
    cfg: A4PrinterConfig, document: bytes, document_format: str = "image/pwg-raster", *, job_name: str = ""
) -> JobResult:
    """Send one document (the kiosk application's print path). Like get_status, never raises for a printer
    problem: a refusal or an absent printer is a JobResult with ``accepted=False`` and the reason."""
    request_id = _next_request_id()
    body = encode_print_job(cfg.printer_uri, document, document_format, request_id, job_name=job_name, user="kiosk")
    answer = await _ask(cfg, body, request_id)
    if isinstance(answer, str):
        return JobResult(accepted=False, error=answer)
    job = answer.attributes(Tag.JOB)
    job_id, state = job.get("job-id"), job.get("job-state")
    return JobResult(
        accepted=True,
        job_id=job_id.value if job_id and isinstance(job_id.value, int) else None,
        state=JOB_STATES.get(state.value, "unknown") if state and isinstance(state.value, int) else "unknown",
    )


def _next_request_id() -> int:
    return next(_request_ids) & 0x7FFFFFFF or 1


async def _ask(cfg: A4PrinterConfig, body: bytes, request_id: int) -> IppMessage | str:
    """The printer's successful answer to one request, or why there is none (the words get_status reports)."""
    try:
        async with asyncio.timeout(cfg.timeout_s):
            answer = await post_ipp(cfg, body)
        msg = decode(answer)
    except TimeoutError:
        return f"no answer from {cfg.url} within {cfg.timeout_s:g} s"
    except ssl.SSLError as exc:
        return f"TLS with {cfg.url} failed: {exc.reason or exc}"
    except OSError as exc:
        # asyncio words a refusal "Connect call failed ('10.0.0.5', 631)": the errno says what happened.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
        return f"connection to {cfg.url} failed: {reason}"
    except UnicodeError as exc:  # the host name does not IDNA-encode
        return f"bad host name in {cfg.url}: {exc}"
    except (_NoAnswer, IppError) as exc:
        return f"{cfg.url} did not answer IPP: {exc}"
    if msg.request_id != request_id:
        return f"{cfg.url} answered request {msg.request_id}, we sent {request_id}"
    if msg.code >= 0x0100:  # 0x0000-0x00FF are the successful-ok* codes
        name = STATUS_NAMES.get(msg.code, f"0x{msg.code:04x}")
        said = msg.attributes(Tag.OPERATION).get("status-message")
        detail = f" ({said.value})" if said and isinstance(said.value, str) else ""
        operation = OPERATION_NAMES.get(int.from_bytes(body[2:4], "big"), "the request")
        return f"{cfg.url} refused {operation}: {name}{detail}"
    return msg


async def post_ipp(cfg: A4PrinterConfig, body: bytes) -> bytes:
    """POST one application/ipp request and return the response body (no timeout of its own)."""
    parts = urlsplit(cfg.url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = _ssl_context(cfg) if cfg.tls else None
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None, limit=64 * 1024
    )
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
            f"Content-Type: application/ipp\r\nAccept: application/ipp\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\nUser-Agent: hallfleet\r\n\r\n"
        )
        writer.write(head.encode("ascii") + body)
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
        # The answer is already in hand; a slow or rude close does not change it.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """The IPP answer's body: refused by its status or type before any body is read (a web page on the printer's
    port may never close); the HTTP reading is drivers/http1.py's, its errors this client's ``_NoAnswer``."""
    try:
        status, headers = await http1.read_head(reader)
        if status != 200:
            raise _NoAnswer(f"HTTP {status}")
        ctype = headers.get("content-type", "application/ipp").split(";")[0].strip().lower()
        if ctype != "application/ipp":
            raise _NoAnswer(f"HTTP answer is {ctype}, not application/ipp (is the URL the printer's IPP path?)")
        return await http1.read_body(reader, headers, MAX_RESPONSE)
    except http1.FetchError as exc:
        raise _NoAnswer(str(exc)) from None


def _ssl_context(cfg: A4PrinterConfig) -> ssl.SSLContext:
    if not cfg.verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.ca_file:
        # A pinned self-signed printer certificate is a leaf (CA:FALSE), not a CA: let it anchor.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx
