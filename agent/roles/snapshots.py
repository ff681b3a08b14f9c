"""When a role re-publishes its whole state: every ``every_s`` on the device's monotonic clock, and on the first
poll. The rule: change events say what moved, the periodic snapshot repairs whatever the centre missed (a
retained message lost, a consumer that started late), so no role may skip it; one timer keeps the cadence for all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class SnapshotTimer:
    def __init__(self, every_s: float, now: Callable[[], float]) -> None:
        self.every_s = every_s
        self.now = now
        self._last = float("-inf")  # the first poll is a snapshot

    def due(self) -> bool:
        """True (and the cadence restarted) when a snapshot is due now."""
        now = self.now()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True


async def poll_forever(poll: Callable[[bool], Awaitable[None]], snapshots: SnapshotTimer, poll_s: float) -> None:
    """Poll every ``poll_s``, telling each poll whether it is the snapshot; returns only by cancellation."""
    while True:
        await poll(snapshots.due())
        await asyncio.sleep(poll_s)
