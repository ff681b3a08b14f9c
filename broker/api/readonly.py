"""A hall's local dashboard is read-only: the API run against a hall consumer's config (``[hall] site``).

The rule: on the hall's own store, every request that would change something is refused (403, said in words)
except logging in and out. Commands, configuration, users and acknowledgements are the centre's: what the hall
consumer leads it sends to the centre, and a change written into the hall's store here would either be
overwritten or never reach the centre (docs/hall-autonomy.md).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

READS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION = frozenset({"/api/login", "/api/logout", "/login", "/logout"})
REFUSAL = {
    "detail": "大厅本地看板为只读: 命令、配置、确认请在中心看板上操作 "
    "(the hall's local dashboard is read-only: commands, configuration and acknowledgements are made at the centre)"
}


class HallReadOnly:
    """Plain ASGI, outside the routes: no route of the app can forget it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS or scope["path"] in SESSION:
            await self.app(scope, receive, send)
            return
        body = json.dumps(REFUSAL, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
