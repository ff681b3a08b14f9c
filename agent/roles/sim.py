"""A simulated device that emits sample events at a fixed rate: the demo's and the tests' load.

Its progress is a counter committed with each event, so after a SIGKILL it resumes where the outbox
says it was, neither repeating nor skipping an event.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from pydantic import Field

from agent.device import DeviceContext
from config.base import Section
from protocol.envelope import Frozen
from protocol.events import AttendancePunch, KioskUsage, RatingSubmitted

COUNTER = "sim"


class SimConfig(Section):
    events: int = Field(default=0, ge=0, description="Emit events until the device has sent this many (0: forever)")
    rate_per_s: float = Field(default=1.0, gt=0, description="Events per second")
    event_type: Literal["attendance.punch", "rating.submitted", "kiosk.usage"] = Field(
        default="attendance.punch", description="The kind of event simulated"
    )


def sample(event_type: str, n: int) -> Frozen:
    if event_type == "attendance.punch":
        return AttendancePunch(staff_id=f"S{n % 40:04d}", method=random.choice(["face", "fingerprint", "qr"]))
    if event_type == "rating.submitted":
        return RatingSubmitted(
            window=f"W{n % 12 + 1:02d}", staff_id=f"S{n % 40:04d}", level=random.choice([5, 5, 4, 3, 1])
        )
    return KioskUsage(counters={"tickets": n, "prints": n // 3})


async def run(device: DeviceContext, cfg: SimConfig) -> None:
    period = 1.0 / cfg.rate_per_s
    n = await device.state.counter(COUNTER)
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while cfg.events == 0 or n < cfg.events:
        await device.emit(cfg.event_type, sample(cfg.event_type, n), counter=COUNTER)
        n += 1
        next_at += period
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1.0:
            next_at = loop.time()  # fell behind (outbox slow): do not burst to catch up
