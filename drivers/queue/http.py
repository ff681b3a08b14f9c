"""The queue system's local HTTP API: ``GET {url}/records?after=N&limit=M`` answers ``{"records": [...]}``,
oldest first (the form the hall's queue PC exports; drivers/queue/sim.py serves the same for the demo and the
tests).

Each record is read on its own, so one bad record is a ``BadRecord`` and the rest of the page still counts; a
page that is not that JSON object, or a record without a usable number, is a QueueSystemError (the agent
retries: nothing is skipped that it cannot name).

The request is drivers/http1.py's ``fetch`` (asyncio streams), not httpx: about a tenth of the CPU per poll, and
no HTTP library in the agent at all (tests/test_lean_roles.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError

from config.base import Section
from drivers.http1 import FetchError, fetch
from drivers.queue.record import BadRecord, QueueRecord, QueueSystemError
from protocol.bounds import INT64_MAX

MAX_PAGE_BYTES = 4 * 1024 * 1024  # 1,000 records of a few hundred bytes, with room


class HttpQueueConfig(Section):
    type: Literal["http"] = Field(default="http", description="Driver selector: the queue system's local HTTP API")
    url: str = Field(
        min_length=8, max_length=200, pattern=r"^https?://", description="Base URL, e.g. http://192.0.2.10:8090/api"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="A request not answered within this fails")


def _errors(exc: ValidationError) -> str:
    # Where and what, never the value: a field the queue system misuses may hold personal data.
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])


def parse_page(body: Any, after: int) -> list[QueueRecord | BadRecord]:
    """The records of one answer; QueueSystemError for a page that cannot be trusted as a whole."""
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise QueueSystemError("page", 'the answer is not {"records": [...]}')
    out: list[QueueRecord | BadRecord] = []
    last = after
    for raw in body["records"]:
        no = raw.get("no") if isinstance(raw, dict) else None
        if not isinstance(no, int) or isinstance(no, bool) or not last < no <= INT64_MAX:
            raise QueueSystemError("page", f"a record after no {last} has no increasing record number")
        last = no
        try:
            out.append(QueueRecord.model_validate(raw))
        except ValidationError as exc:
            out.append(BadRecord(no, _errors(exc)))
    return out


class HttpQueueSystem:
    def __init__(self, cfg: HttpQueueConfig) -> None:
        self.cfg = cfg
        self._base = cfg.url.rstrip("/")

    async def records(self, after: int, limit: int) -> Sequence[QueueRecord | BadRecord]:
        url = f"{self._base}/records?after={after}&limit={limit}"
        try:
            status, content = await fetch(url, max_body=MAX_PAGE_BYTES, timeout_s=self.cfg.timeout_s)
        except TimeoutError:
            raise QueueSystemError(
                self.cfg.url, f"no answer within {self.cfg.timeout_s:g} s: is the queue PC up?"
            ) from None
        except FetchError as exc:
            raise QueueSystemError(self.cfg.url, f"{exc} (a page too long? lower the agent's page size)") from None
        except (OSError, UnicodeError) as exc:  # refused, reset, no route, TLS, a host name that does not encode
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else exc.__class__.__name__
            raise QueueSystemError(self.cfg.url, f"{reason}: is the queue PC up and reachable?") from None
        if status != 200:
            raise QueueSystemError(self.cfg.url, f"HTTP {status} {content[:120].decode(errors='replace')!r}")
        try:
            body = json.loads(content)
        except ValueError:
            raise QueueSystemError(self.cfg.url, "the answer is not JSON") from None
        return parse_page(body, after)

    async def aclose(self) -> None:
        """Nothing held between polls (one connection per request, as the queue PC's API answers)."""
