"""The batch stage alone (broker/ingest/batch.py): what a batch holds, so decoding a backlog overlaps its commit."""

from __future__ import annotations

import asyncio

from broker.ingest.batch import Batcher
from broker.ingest.items import Item


def _items(n: int, qos0_every: int = 0) -> list[Item]:
    """``n`` items; every ``qos0_every``-th has no packet id (QoS 0: nothing to acknowledge)."""
    return [Item("t", b"", None if qos0_every and i % qos0_every == 0 else i + 1) for i in range(n)]


async def test_a_batch_takes_at_most_half_the_receive_bound_and_the_rest_follows_at_once() -> None:
    b = Batcher(size=2, wait_s=10.0, bound=10)  # a wait far beyond the test: only the cap may split
    items = _items(8, qos0_every=3)
    for it in items:
        b.add(1, it)
    closing = asyncio.Event()
    first = await asyncio.wait_for(b.next(closing), 1)
    second = await asyncio.wait_for(b.next(closing), 1)  # leftovers have waited already: due at once
    assert first is not None and second is not None
    assert first.items == items[:5] and second.items == items[5:]
    # each batch acknowledges exactly its own QoS 1 messages, in order
    assert first.packet_ids == [it.mid for it in items[:5] if it.mid is not None]
    assert second.packet_ids == [it.mid for it in items[5:] if it.mid is not None]
    assert b.pending == 0


async def test_a_batch_size_above_half_the_bound_is_kept_whole() -> None:
    b = Batcher(size=8, wait_s=10.0, bound=10)
    for it in _items(8):
        b.add(1, it)
    batch = await asyncio.wait_for(b.next(asyncio.Event()), 1)
    assert batch is not None and len(batch.items) == 8
