"""One injectable time source for everything that decides by time (tests and the demo run days in minutes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

HALL_ZONE = ZoneInfo("Asia/Shanghai")


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals and timeouts; never jumps."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class ScaledClock:
    """Wall time starting at ``start`` and running ``speed`` times faster than real time."""

    start: datetime
    speed: float = 1.0
    _t0: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.speed


def real_seconds(clock: Clock, seconds: float) -> float:
    """How long ``seconds`` of ``clock``'s time last in real time. asyncio's sleeps and timeouts are real,
    so a loop that must keep an interval the centre measures on the clock (the heartbeat, whose stale
    deadline is the receive time plus 1.5 intervals) waits this; the same for every clock but a ScaledClock."""
    return seconds / clock.speed if isinstance(clock, ScaledClock) else seconds
