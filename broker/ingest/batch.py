"""The batch stage: decoded items wait here, bounded, until a batch is due for the commit stage.

The rules: a batch goes when it reaches ``size`` items, when ``wait_s`` has passed since its first item, at
once for what should not wait (a status, a dead letter: presence and refusals are news; a command's final
answer, a config's report: someone waits for it, issue 20's ``diagnose`` round trip), and at once when
the receive stage has stopped reading (its receive bound is reached: waiting longer would wait for nothing).
A batch holds at most half the receive bound (or ``size``, if larger): while one half commits, the receive
stage may take the other half, so decoding a backlog overlaps its commit instead of waiting for it (a batch
of the whole bound left the reader idle through every commit: measured, the drain's batches averaged 1,852
of 2,000 and the consumer sat at two thirds of a core).
A batch holds the messages of one connection (``link``): when a new connection delivers, what the old one
left here is dropped unacknowledged, since its acknowledgements could not count any more and the broker
sends those messages again (the store takes each once).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from broker.ingest.items import Item


@dataclass(slots=True)
class Collected:
    """One batch: the items of one connection, in arrival order, and the packet ids to acknowledge."""

    link: int
    items: list[Item] = field(default_factory=list)
    packet_ids: list[int] = field(default_factory=list)


class Batcher:
    def __init__(self, size: int, wait_s: float, bound: int) -> None:
        if size < 1 or bound < 1:
            raise ValueError("a batch needs room for one message")
        self.size = size
        self.wait_s = wait_s
        self.bound = bound  # the receive stage's receive maximum: nothing more arrives past it
        self.most = max(size, bound // 2)  # the largest batch taken at once (the module's docstring says why)
        self.dropped_stale = 0  # items of an ended connection dropped here (the broker sends them again)
        self._pending = Collected(0)
        self._due = asyncio.Event()
        self._started = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending.items)

    def add(self, link: int, item: Item, urgent: bool = False) -> None:
        p = self._pending
        if link != p.link:
            self.dropped_stale += len(p.items)
            p = self._pending = Collected(link)
        p.items.append(item)
        if item.mid is not None:
            p.packet_ids.append(item.mid)
        self._started.set()
        if urgent or len(p.items) >= self.size or len(p.packet_ids) >= self.bound:
            self._due.set()

    async def next(self, closing: asyncio.Event) -> Collected | None:
        """The next batch when it is due; None once ``closing`` is set (what is pending stays unacknowledged)."""
        while not closing.is_set():
            if not self._pending.items:
                self._started.clear()
                await _first(self._started, closing)
                continue
            if not self._due.is_set() and self.wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._due, closing), self.wait_s)
            if closing.is_set():
                return None
            return self._take()
        return None

    def _take(self) -> Collected:
        """The first ``most`` pending items as a batch; the rest stay pending and due (they have waited)."""
        p = self._pending
        if len(p.items) <= self.most:
            self._pending = Collected(p.link)
            self._due.clear()
            return p
        out, rest = p.items[: self.most], p.items[self.most :]
        acks = sum(1 for it in out if it.mid is not None)
        self._pending = Collected(p.link, rest, p.packet_ids[acks:])
        return Collected(p.link, out, p.packet_ids[:acks])


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
