"""The few lines of HTTP/1.1 a device endpoint on the hall's LAN speaks: one request per connection, a body
with Content-Length, JSON both ways (the simulated IPP printer, drivers/ipp/sim.py, answers application/ipp).
Shared by the rating pad's queue endpoint (agent/roles/rating.py), the simulated queue system
(drivers/queue/sim.py) and that printer, so all refuse the same bad requests with the same statuses; the reading
of an answer (``read_head``, ``read_body``) also by the IPP client (drivers/ipp/client.py).

The rule: a request that cannot be taken gets a 4xx naming what the client must fix, never a dropped
connection, and nothing of it is acted on.

The client side (``fetch``) is what the queue system's driver asks its LAN API with: one request per connection,
an answer by Content-Length, chunks or close, bounded. httpx spent about 1.8 ms of CPU per request on this
(issue 20: a fleet simulator's queue devices were a third of its CPU; a Pi polls its queue PC every 2 s) and
loaded 6.7 MB of modules into the agent; this needs the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

MAX_HEADERS = 100


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_request(reader: asyncio.StreamReader, max_body: int) -> tuple[str, str, bytes]:
    """Method, path and body of one HTTP/1.1 request; HttpError for what the client must fix."""
    try:
        parts = (await reader.readline()).decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "not an HTTP/1.x request line")
        headers: dict[str, str] = {}
        for _ in range(64):
            line = (await reader.readline()).decode("latin-1")
            if line.strip() == "":
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, f"malformed header line {line.strip()[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise HttpError(431, "more than 64 header lines")
    except ValueError:  # a line longer than the stream's limit
        raise HttpError(431, "a request or header line is too long") from None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "send the body with Content-Length, not chunked")
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise HttpError(400, f"bad Content-Length {length[:20]!r}")
    if int(length) > max_body:
        raise HttpError(413, f"body of {length} bytes: at most {max_body}")
    return parts[0], parts[1], await reader.readexactly(int(length))


async def write_json(writer: asyncio.StreamWriter, status: int, body: Any) -> None:
    """Answer with ``body`` as JSON and close the connection; a client that went away is no error."""
    payload = json.dumps(body, ensure_ascii=False).encode()
    await write_body(writer, status, "application/json; charset=utf-8", payload)


async def write_body(writer: asyncio.StreamWriter, status: int, content_type: str, payload: bytes) -> None:
    """Answer with ``payload`` (the simulated IPP printer's application/ipp) and close the connection."""
    try:
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- the client -------------------------------------------------------------------------------------------
class FetchError(Exception):
    """The answer could not be had or read (refused, reset, cut short, not HTTP, too long): the message says which."""


async def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    max_body: int,
    timeout_s: float,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    """Status and body of one request to ``url`` (http or https); FetchError, OSError or TimeoutError when there is
    none. ``timeout_s`` bounds the connection, then the exchange, each on its own (as httpx did): a loop busy for a
    moment (a simulator connecting thousands of agents) delays both without either being late."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    context = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if context else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=64 * 1024)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        async with asyncio.timeout(timeout_s):
            writer.write((head + "\r\n").encode("latin-1") + (body or b""))
            await writer.drain()
            return await read_response(reader, max_body)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):  # the answer is in hand; a rude close changes nothing
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, max_body: int) -> tuple[int, bytes]:
    """One answer (after any ``100 Continue``): its status and its body, at most ``max_body`` bytes."""
    status, headers = await read_head(reader)
    return status, await read_body(reader, headers, max_body)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The answer's status and headers (names in lower case), after any interim ``100 Continue``: a caller that
    must refuse an answer by its headers (the IPP client: not application/ipp) does so before reading a body."""
    status, headers = await _head(reader)
    while status == 100:
        status, headers = await _head(reader)
    return status, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], max_body: int) -> bytes:
    """The body ``headers`` announce: chunked, by Content-Length, or up to the close; at most ``max_body`` bytes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _chunked(reader, max_body)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > max_body:
            raise FetchError(f"Content-Length {length[:20]!r}: not a length of at most {max_body} bytes")
        return await _exactly(reader, int(length))
    data = await reader.read(max_body + 1)
    while len(data) <= max_body and (more := await reader.read(max_body + 1 - len(data))):
        data += more
    if len(data) > max_body:
        raise FetchError(f"an answer longer than {max_body} bytes")
    return data


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    fields = (await _line(reader)).split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise FetchError(f"not an HTTP answer: {' '.join(fields)[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = await _line(reader)
        if not line:
            return int(fields[1]), headers
        name, sep, value = line.partition(":")
        if not sep:
            raise FetchError(f"a malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    raise FetchError(f"more than {MAX_HEADERS} header lines")


async def _chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    data = bytearray()
    while True:
        size = (await _line(reader)).split(";")[0].strip()
        try:
            n = int(size, 16)
        except ValueError:
            raise FetchError(f"a bad chunk size {size[:20]!r}") from None
        if n == 0:
            while await _line(reader):  # trailers
                pass
            return bytes(data)
        if len(data) + n > max_body:
            raise FetchError(f"an answer longer than {max_body} bytes")
        data += await _exactly(reader, n)
        await _line(reader)


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise FetchError(f"the connection closed mid-answer after {len(exc.partial)} bytes of a line") from None
    except asyncio.LimitOverrunError:
        raise FetchError("an HTTP line longer than 64 KiB") from None
    return raw.decode("latin-1").rstrip("\r\n")


async def _exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise FetchError(f"the connection closed after {len(exc.partial)} of {n} body bytes") from None
