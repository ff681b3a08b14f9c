"""At most one event per key per window, the latest value winning: a flapping sensor cannot flood the
outbox, and the last word is never lost (trailing edge)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class _Slot(Generic[V]):
    published: V | None = None
    at: float = float("-inf")
    pending: V | None = None
    has_pending: bool = False


class Debouncer(Generic[V]):
    def __init__(self, window_s: float, now: Callable[[], float]) -> None:
        self.window_s = window_s
        self.now = now
        self._slots: dict[str, _Slot[V]] = {}
        self.suppressed = 0

    def offer(self, key: str, value: V) -> V | None:
        """A new reading. Returns it when it should be published now, else None (kept for later)."""
        slot = self._slots.setdefault(key, _Slot())
        if slot.at != float("-inf") and value == slot.published:
            slot.has_pending = False  # back to what the centre already knows
            return None
        if self.now() - slot.at >= self.window_s:
            self._mark(slot, value)
            return value
        self.suppressed += 1  # held back: at most the latest of these goes out, at the window's end
        slot.pending, slot.has_pending = value, True
        return None

    def due(self) -> list[tuple[str, V]]:
        """Held values whose window has passed: publish these now."""
        out: list[tuple[str, V]] = []
        for key, slot in self._slots.items():
            if slot.has_pending and self.now() - slot.at >= self.window_s:
                value = slot.pending
                assert value is not None
                self._mark(slot, value)
                out.append((key, value))
        return out

    def _mark(self, slot: _Slot[V], value: V) -> None:
        slot.published, slot.at, slot.pending, slot.has_pending = value, self.now(), None, False
