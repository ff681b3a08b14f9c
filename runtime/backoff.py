"""Reconnect delays, written once for every side: capped exponential growth with equal jitter.

The rule: the n-th retry waits between half and all of ``min(max_s, initial_s * 2**n)``, never less than
half, never more than the cap. A hall's devices that lost the same WAN, or the consumers behind one broker
that restarted, must not all come back in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.max_s, self.initial_s * (2 ** min(attempt, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)
