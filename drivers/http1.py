"""The few lines of HTTP/1.1 a device endpoint on the hall's LAN speaks: one request per connection, a body
with Content-Length, JSON both ways (the simulated IPP printer, drivers/ipp/sim.py, answers application/ipp).
Shared by the rating pad's queue endpoint (agent/roles/rating.py), the simulated queue system
(drivers/queue/sim.py) and that printer, so all refuse the same bad requests with the same statuses.

The rule: a request that cannot be taken gets a 4xx naming what the client must fix, never a dropped
connection, and nothing of it is acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus
from typing import Any


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
