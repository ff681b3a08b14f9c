"""Every background task the agent starts has an owner, which cancels and awaits it on stop.

Rule: no fire-and-forget ``create_task``. A task whose exception nobody retrieves ends as "Task exception
was never retrieved" at garbage collection, long after the failure, and a task nobody cancels outlives the
agent that started it (in the fleet simulator, a powered-off agent's job kept running).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = 0  # jobs that ended with an exception (each logged)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a job owned here; its failure is logged (and counted) as it happens."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never reports it as lost
        if exc is not None:
            self.failed += 1
            log.error("%s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every job still running and wait until each has ended."""
        while self._tasks:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)


async def first_of(*waits: Awaitable[Any], timeout_s: float | None) -> None:
    """Return when the first of ``waits`` is done or ``timeout_s`` (None: never) passed; the others are cancelled
    and awaited before returning, so no waiter outlives the wait that made it."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
