"""Bounds on what a request may bring, enforced before anything parses it.

The rule: no request, logged in or not, makes the process hold more than ``max_body_bytes`` of its body, and
no form field is longer than its field's bound. The body is read (to the bound) before the route runs, so
FastAPI's JSON parsing, our form parsing and pydantic only ever see a bounded body; a longer one is a 413
whether it announced its length or streamed it chunked. Headers and the request line are bounded by the
HTTP parser itself (h11: 16 KiB).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_FIELDS = 32
DRAIN_BYTES = 64 * 1024 * 1024  # a refused body up to this size is read and dropped, so the client reads the 413
FIELD_BYTES = 4096  # a follow-up's reply text is the longest field a page posts (models cap it at 2,000)


class BodyLimit:
    """Plain ASGI: the body is read before the app sees the request, then handed on from memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            if declared.isdigit() and int(declared) <= DRAIN_BYTES:
                await _drain(receive)
            await _too_large(send, self.max_bytes)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before it finished sending
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                if more:
                    await _drain(receive)
                await _too_large(send, self.max_bytes)
                return
            if not more:
                break
        await self.app(scope, _replay(bytes(body), receive), send)


async def _drain(receive: Receive) -> None:
    """Read the rest of a refused body and keep none of it, up to DRAIN_BYTES: a client still sending when the
    413 goes out and the connection closes sees a reset instead of the answer."""
    seen = 0
    while seen <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: http.disconnect, as the app expects

    return replayed


async def _too_large(send: Send, limit: int) -> None:
    detail = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(detail)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": detail})


async def form_fields(request: Request, bounds: dict[str, int] | None = None) -> dict[str, str]:
    """application/x-www-form-urlencoded (the only form encoding our pages use), at most MAX_FIELDS fields,
    each within ``bounds`` (characters; FIELD_BYTES for fields not named): a longer one is a 422 naming it."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        parsed = parse_qs(body, keep_blank_values=True, max_num_fields=MAX_FIELDS) if body else {}
    except ValueError:
        raise HTTPException(422, f"a form has at most {MAX_FIELDS} fields") from None
    fields = {k: v[0] for k, v in parsed.items()}
    for key, value in fields.items():
        if len(value) > (bounds or {}).get(key, FIELD_BYTES):
            raise HTTPException(422, f"form field {key[:64]!r}: too long")
    return fields
