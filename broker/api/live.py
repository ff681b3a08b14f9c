"""What keeps a live stream (server-sent events) honest: it lives only as long as the session that opened it,
and one user holds a bounded number of them.

The rules: before every round of pushes the session is read again from the store; when it is gone (logout,
password change, disabled user, idle or absolute expiry) or its user changed, the stream sends ``end`` and
closes (EventSource then reconnects and meets the 401). A user holds at most ``streams_per_user`` streams; one
more is a 429. The slot is held by the response itself, from its first byte to its last, so a client that
vanishes gives it back as surely as one that says goodbye.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from broker.api.auth import User, request_token, session_of

END = "event: end\ndata: {}\n\n"


async def still_valid(request: Request, user: User) -> bool:
    """The stream's session still exists, is not expired, and is still ``user`` (same role, same sites)."""
    token = request_token(request)
    state = request.app.state
    found = await session_of(state.store, token, state.clock.now()) if token else None
    return found is not None and found.user == user


class LiveStream(StreamingResponse):
    def __init__(self, content: object, user: User, slots: dict[str, int], cap: int) -> None:
        super().__init__(
            content,  # type: ignore[arg-type]
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.user, self.slots, self.cap = user, slots, cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.user.name
        if self.slots.get(name, 0) >= self.cap:
            await _refuse(send, f"{name} has {self.cap} live streams open already: close a dashboard tab")
            return
        self.slots[name] = self.slots.get(name, 0) + 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots[name] -= 1
            if not self.slots[name]:
                del self.slots[name]


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"30")]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
