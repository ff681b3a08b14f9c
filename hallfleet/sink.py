"""The demo's and the fleet's one small HTTP server: the alert webhook (POST /alerts, appended to alerts.log and
shown in one line) and the health probe of the simulated kiosk application (GET /health/...).

Its own module, not hallfleet/demo.py's: a fleet simulator process needs only this, and importing the demo
brought the whole centre (the API, uvicorn, the consumer) into every slice: 71 MB of RSS and 0.5 s of CPU each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from drivers.http1 import HttpError, read_request
from runtime.clock import HALL_ZONE


class Sink:
    """The alert webhook and the kiosk application's health probe (see the module docstring)."""

    def __init__(
        self, log_path: Path, health: dict[str, bool], now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.log_path = log_path
        self.health = health
        self.now = now  # the demo's: hall time
        self.received = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await asyncio.wait_for(read_request(reader, 1_000_000), 5)
            status = self._answer(method, path, body)
        except (HttpError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            status = 400
        with contextlib.suppress(ConnectionError):
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            writer.close()

    def _answer(self, method: str, path: str, body: bytes) -> int:
        if method == "GET" and path.startswith("/health/"):  # healthy unless the scenario says otherwise
            return 200 if self.health.get(path, True) else 503
        if method != "POST" or path != "/alerts":
            return 404
        alert = json.loads(body)
        self.received += 1
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"received_at": self.now().isoformat(), **alert}, ensure_ascii=False) + "\n")
        print(f"  告警 {self.now().astimezone(HALL_ZONE):%H:%M} → {alert.get('subject', '')}")
        return 200
