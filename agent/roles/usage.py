"""Usage counters of the kiosk application (tickets, prints, copies, queries), pluggable:

- ``http``: the application serves a JSON object of cumulative counters on a local endpoint;
- ``log``: the agent counts lines of the application's log that match a pattern per counter,
  remembering where it stopped (and noticing rotation), so counts survive agent restarts.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from config.base import Section

if TYPE_CHECKING:
    from agent.state import StateStore

MAX_BODY = 64 * 1024


class UsageError(Exception):
    """The usage source could not be read this time (the reason is in the message)."""


class HttpUsageConfig(Section):
    type: Literal["http"] = "http"
    url: str = Field(description="Local endpoint answering a JSON object of cumulative counters")
    timeout_s: float = Field(default=2.0, gt=0, le=30, description="How long to wait for it")


class LogUsageConfig(Section):
    type: Literal["log"] = "log"
    path: Path = Field(description="The application's log file")
    patterns: dict[str, str] = Field(
        min_length=1, description="Counter name -> regular expression; each matching line counts once"
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern for {name!r} is not a regular expression: {exc}") from None
        return value


UsageConfig = Annotated[HttpUsageConfig | LogUsageConfig, Field(discriminator="type")]


async def read_http(cfg: HttpUsageConfig) -> dict[str, int]:
    def get() -> bytes:
        with urllib.request.urlopen(cfg.url, timeout=cfg.timeout_s) as resp:
            return bytes(resp.read(MAX_BODY))

    try:
        body = await asyncio.to_thread(get)
        data = json.loads(body)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise UsageError(f"usage endpoint {cfg.url}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"usage endpoint {cfg.url}: expected a JSON object")
    return {str(k)[:32]: int(v) for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


class LogCounter:
    """Counts matching lines of a growing log; its position and counts live in the agent's state."""

    def __init__(self, cfg: LogUsageConfig, state: StateStore) -> None:
        self.cfg = cfg
        self.state = state
        self.patterns = {name: re.compile(p) for name, p in cfg.patterns.items()}

    async def read(self) -> dict[str, int]:
        before = await self.state.kv_get("usage.log")
        state = json.loads(before or "{}")
        counts: dict[str, int] = {k: int(v) for k, v in state.get("counts", {}).items()}
        try:
            new, inode, offset = await asyncio.to_thread(self._tail, state.get("inode"), int(state.get("offset", 0)))
        except OSError as exc:
            raise UsageError(f"usage log {self.cfg.path}: {exc}") from None
        for line in new:
            for name, rx in self.patterns.items():
                if rx.search(line):
                    counts[name] = counts.get(name, 0) + 1
        for name in self.patterns:
            counts.setdefault(name, 0)
        after = json.dumps({"inode": inode, "offset": offset, "counts": counts})
        if after != before:  # a log that did not grow is no write: most polls (issue 20), on a Pi an SD card's
            await self.state.kv_set("usage.log", after)
        return counts

    def _tail(self, inode: int | None, offset: int) -> tuple[list[str], int, int]:
        st = self.cfg.path.stat()
        if st.st_ino != inode or st.st_size < offset:
            offset = 0  # rotated or truncated: the new file from its start
        with self.cfg.path.open("rb") as f:
            f.seek(offset)
            data = f.read(4 * 1024 * 1024)
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        lines = data[:end].decode("utf-8", errors="replace").splitlines()
        return lines, st.st_ino, offset + end
