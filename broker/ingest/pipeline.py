"""The consumer's ingest, composed: receive -> decode and validate -> batch -> commit -> acknowledge and confirm.

The rule the composition keeps: a message is acknowledged (PUBACK, on the connection that delivered it) only
after the transaction holding it, or its dead letter, has committed, and only then are the devices told
which of their events the store holds. Two tasks share the work: the reader decodes what the receive stage
hands over into the batch stage (never waiting on the store), the writer commits due batches and
acknowledges them. The receive stage stops reading at its receive maximum of unacknowledged messages, so
the reader can never run ahead of the store by more than that.

On stop a commit in progress may finish (its acknowledgements still go out); a wait for an unavailable store
ends at once; what is pending stays unacknowledged and the broker sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broker.ingest.batch import Batcher
from broker.ingest.commit import Committer
from broker.ingest.counters import Counters
from broker.ingest.decode import SYS_DROPPED, BrokerDrops, Decoder
from broker.ingest.isolation import StopCommitting
from broker.ingest.items import Item
from broker.ingest.receive import Receiver
from broker.outbound import confirm_stored
from protocol.commands import FINAL_STATES

log = logging.getLogger(__name__)

WRITER_STOP_S = 10.0  # a commit in progress may finish; the unit's TimeoutStopSec is 30 s
# The reader lets the loop run between every so many messages: one read of a backlog brings thousands (about
# 15 µs each to decode), and the writer's next step (its database call returning) waited for all of them, so
# the commit stage stood still while the reader decoded. 64 messages is about a millisecond.
YIELD_EVERY = 64


class Ingest:
    def __init__(
        self,
        receiver: Receiver,
        decode: Decoder,
        batcher: Batcher,
        commit: Committer,
        counters: Counters,
        closing: asyncio.Event,
        confirm: bool = True,
    ) -> None:
        self.receiver = receiver
        self.decode = decode
        self.batcher = batcher
        self.commit = commit
        self.counters = counters
        self.drops = BrokerDrops()
        # A hall consumer never confirms: devices keep each event until the centre's store holds it
        # (docs/hall-autonomy.md), so the WAN's outage costs no event whatever the bridge's queue drops.
        self.confirm = confirm
        self.closing = closing  # set on stop: the writer ends, a store retry gives up (the committer shares it)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event) -> None:
        """Until ``stop`` is set; raises what ended the receive stage (a refusal retrying cannot cure)."""
        reader = asyncio.create_task(self._read(), name="ingest-read")
        writer = asyncio.create_task(self._write(), name="ingest-write")
        up = asyncio.create_task(self._ready(ready), name="ingest-ready")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reader, writer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.closing.set()
            await self._stop_writer(writer)
            for task in (reader, up, stopping):
                task.cancel()
            await asyncio.wait({reader, up, stopping})
        for task in (reader, writer, up):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _ready(self, ready: asyncio.Event) -> None:
        await self.receiver.wait_connected()
        ready.set()

    async def _read(self) -> None:
        c, decode, add, clock = self.counters, self.decode, self.batcher.add, self.decode.clock
        async for batch in self.receiver.batches():
            link, now = batch.link, clock.now()  # every message of one read arrived now
            for i, msg in enumerate(batch.messages, 1):
                if not i % YIELD_EVERY:
                    await asyncio.sleep(0)
                if msg.topic == SYS_DROPPED:
                    self.drops.read(msg.payload)
                    c.broker_dropped = self.drops.dropped
                    continue
                c.received += 1
                item = decode(msg, now)
                if item.status is not None:
                    c.statuses += 1
                add(link, item, _urgent(item))

    async def _write(self) -> None:
        rx = self.receiver
        while True:
            due = await self.batcher.next(self.closing)
            if due is None:
                return
            try:
                committed = await self.commit(due.items)
            except StopCommitting:
                log.warning(
                    "stopped while the store was unavailable: %d messages left unacknowledged "
                    "(the broker delivers them again)",
                    len(due.packet_ids),
                )
                return
            rx.ack(due.link, due.packet_ids)
            if self.confirm:
                confirm_stored(rx, [it.confirm for it in committed.held if it.confirm is not None])

    async def _stop_writer(self, writer: asyncio.Task[None]) -> None:
        """Let a commit in progress finish rather than cancel it half-way (a cancelled database call may hang
        in its own cleanup)."""
        try:
            await asyncio.wait_for(asyncio.shield(writer), WRITER_STOP_S)
        except TimeoutError:
            log.error("a commit took over %.0f s while stopping: cancelling it", WRITER_STOP_S)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        except Exception:  # the writer's own failure: raised by run() below
            pass


def _urgent(item: Item) -> bool:
    """Presence changes and refusals are news, and a command's final answer or a config's report is what somebody
    waits for (the operator who sent it, a remediation step): none waits for a full batch. A command's
    ``delivered`` and ``running`` ride with the batch its final answer sends at once (one commit, not three)."""
    if item.status is not None or item.dead is not None or item.config_report is not None:
        return True
    return item.ack is not None and item.ack[1].state in FINAL_STATES
