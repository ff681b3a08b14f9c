"""Valid envelopes for tests that play a device without running an agent."""

from __future__ import annotations

from datetime import UTC, datetime

from protocol.envelope import Envelope
from protocol.ids import uuid7


def punch(seq: int, site: str = "qp", device: str = "att-1") -> Envelope:
    return Envelope(
        v=1,
        id=uuid7(),
        site=site,
        device=device,
        type="attendance.punch",
        seq=seq,
        boot_id="b1",
        ts=datetime.now(UTC),
        clock_synced=True,
        data={"staff_id": f"S{seq % 40:04d}", "method": "face"},
    )
