"""The agent's MQTT link: connect with backoff, birth and Will, pump the outbox, retire what the store
confirms, say goodbye on a clean stop.

One connection at a time; each gets a fresh session counter that its birth and its Will both carry.
Nothing here polls: the pump sleeps until the outbox commits an event, a PUBACK asks for a re-send, or
the re-send deadline of the oldest unconfirmed event comes (a timer set to that deadline, not a tick).
The outbox is used through its public methods only; every task started here is owned and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from agent.outbox import Outbox
from agent.state import StateStore
from agent.tasks import TaskSet, first_of
from protocol import topics
from protocol.envelope import Presence, StatusMessage, StoredAck
from protocol.signing import as_replayed
from runtime.backoff import Backoff
from runtime.clock import Clock, real_seconds
from runtime.transport import AsyncMqtt, LinkOptions, MqttError, Will

log = logging.getLogger(__name__)

# PUBACK reasons that will never turn into success by re-sending (MQTT 5, 3.4.2.1). Anything else
# that fails (quota exceeded, implementation specific) stays in the outbox and is re-sent.
PERMANENT_PUBACK_FAILURES = {0x87, 0x90, 0x95, 0x99}
# PUBACK 0x10: accepted, but nobody subscribes (the consumer has never connected yet). The event went
# nowhere: re-send soon, backing off, rather than after the full confirmation timeout.
NO_MATCHING_SUBSCRIBERS = 0x10
UNROUTED_RETRY_S = 1.0
RESEND_MAX_S = 3600.0
STABLE_CONNECTION_S = 30.0


@dataclass(frozen=True, slots=True)
class Identity:
    site: str
    device: str
    boot_id: str
    heartbeat_s: float
    role: str
    agent_version: str


class Link:
    def __init__(
        self,
        options: Callable[[Will], LinkOptions],
        identity: Identity,
        outbox: Outbox,
        state: StateStore,
        clock: Clock,
        backoff: Backoff,
        confirm_timeout_s: float = 120.0,
    ) -> None:
        self._options = options
        self.identity = identity
        self.outbox = outbox
        self.state = state
        self.clock = clock
        self.backoff = backoff
        self.confirm_timeout_s = confirm_timeout_s
        self.connected = asyncio.Event()
        self.session = 0
        self.connects = 0
        self._client: AsyncMqtt | None = None
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._space = asyncio.Event()
        self._acks: asyncio.Queue[StoredAck] = asyncio.Queue(maxsize=1000)
        self._stopping = False
        self.on_command: Callable[[bytes], None] | None = None
        self.on_config: Callable[[bytes], None] | None = None
        self.heartbeat_s = identity.heartbeat_s
        self._progress_at = 0.0
        self._unrouted = False
        self._unrouted_retry_s = UNROUTED_RETRY_S
        self._resend_after_s = confirm_timeout_s
        self._oldest: int | None = None  # the oldest seq still waiting at the last confirmation
        self._nudge = asyncio.Event()  # a PUBACK asked for an early re-send: the pump recomputes its deadline
        self._changed = asyncio.Event()  # set on every connect and disconnect (wait_session)
        self._flipped = asyncio.Event()  # set, then replaced, on every connect and disconnect (wait_change)
        self._jobs = TaskSet("link")
        self.idle_waits = 0  # times the pump went to sleep with nothing to send (tests: no polling)

    # -- what the rest of the agent reads --------------------------------------------------------------
    def is_up(self) -> bool:
        return self.connected.is_set()

    async def wait_session(self, after: int) -> int:
        """Wait until connected in a session newer than ``after``; returns it."""
        while not (self.connected.is_set() and self.session > after):
            self._changed.clear()
            await self._changed.wait()
        return self.session

    def _set_connected(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        self._changed.set()
        # A fresh event per change: every waiter of this one wakes, none misses the next or sees a stale set.
        self._flipped.set()
        self._flipped = asyncio.Event()

    async def wait_change(self) -> None:
        """Return at the next connect or disconnect (a role that marks the link on its screen waits for this
        instead of asking ``is_up`` on a timer)."""
        await self._flipped.wait()

    # -- the connection loop -----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self._jobs.close()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            started = self.clock.monotonic()
            try:
                await self._one_connection()
            except MqttError as exc:
                log.warning("MQTT link: %s", exc)
            except Exception:  # a bug here must not stop the device taking punches: log, reconnect
                log.exception("MQTT link failed unexpectedly")
            if self._stopping:
                return
            if self.clock.monotonic() - started > STABLE_CONNECTION_S:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _one_connection(self) -> None:
        i = self.identity
        self.session = await self.state.next_session()
        will = Will(topics.status(i.site, i.device), self._status(Presence.OFFLINE))
        client = AsyncMqtt(self._options(will))
        client.on_puback = self._on_puback
        client.on_message = self._on_message
        await client.connect()
        self._client = client
        self.connects += 1
        try:
            await client.subscribe(
                [
                    (topics.stored(i.site, i.device), 1),
                    (topics.cmd(i.site, i.device), 1),
                    (topics.cfg(i.site, i.device), 1),
                ]
            )
            client.publish(topics.status(i.site, i.device), self._status(Presence.ONLINE), qos=1, retain=True)
            self._set_connected(True)
            log.info("connected to MQTT as session %d", self.session)
            tasks = [
                asyncio.create_task(self._pump(client), name="outbox-pump"),
                asyncio.create_task(self._confirm_loop(), name="outbox-confirm"),
                asyncio.create_task(client.wait_closed(), name="mqtt-closed"),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Also when this connection is cancelled (the agent's task cancelled: a power loss in the
                # fleet simulator): a pump left running would publish into the closed client, its error
                # never retrieved.
                for task in tasks:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            # The pump sees a dead socket first when publishing into it: that is a lost connection too.
            errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, MqttError)]
            if errors:
                raise errors[0]
            log.warning("MQTT connection lost: %s", results[2] if isinstance(results[2], str) else results)
        finally:
            self._set_connected(False)
            self._client = None
            self._inflight.clear()
            self._space.set()
            await client.close()

    def _status(self, state: Presence) -> bytes:
        i = self.identity
        return (
            StatusMessage(
                state=state,
                session=self.session,
                boot_id=i.boot_id,
                ts=self.clock.now(),
                heartbeat_s=self.heartbeat_s,
                agent_version=i.agent_version,
                role=i.role,
            )
            .model_dump_json()
            .encode()
        )

    async def stop(self, drain_s: float = 2.0) -> None:
        """Clean stop: let in-flight publishes finish, say ``shutdown`` (retained), DISCONNECT so the
        broker drops our Will."""
        self._stopping = True
        client = self._client
        if client is None or not client.is_connected:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                while self._inflight:
                    self._space.clear()
                    await self._space.wait()  # each PUBACK sets it
        i = self.identity
        with contextlib.suppress(MqttError):
            client.publish(topics.status(i.site, i.device), self._status(Presence.SHUTDOWN), qos=1, retain=True)
            await asyncio.sleep(0.1)
        await client.disconnect()

    # -- publishing --------------------------------------------------------------------------------
    async def _pump(self, client: AsyncMqtt) -> None:
        """Publish the outbox in seq order. Rows already there when the connection came up were kept
        through an outage: they go out with ``replayed=true``."""
        replay_upto = self.outbox.last_seq
        last = -1
        self._progress_at = self.clock.monotonic()
        limit = client.options.max_inflight
        while True:
            if len(self._inflight) >= limit:
                self._space.clear()
                await self._space.wait()
                continue
            seen = self.outbox.committed_seq  # before the fetch: a commit after it wakes the wait below
            want = limit - len(self._inflight)
            rows = await self.outbox.fetch(last, want)
            for row in rows:
                body = _as_replayed(row.body) if row.seq <= replay_upto else row.body
                self._inflight[client.publish(row.topic, body, qos=1)] = row.seq
                last = row.seq
            if len(rows) == want:
                continue  # a full page: more may wait. A short one was all there was: no second query to learn that
            # (one per event, issue 20), the wait below returns at once for anything committed since the fetch.
            if self.outbox.depth and self._should_resend():
                # Sent and PUBACKed, but the store never confirmed: the broker may have lost them.
                log.warning("%d events not confirmed by the store: re-sending", self.outbox.depth)
                last = -1
                self._progress_at = self.clock.monotonic()
                continue
            await self._idle(max(last, seen))

    async def _idle(self, after_seq: int) -> None:
        """Sleep until an event beyond ``after_seq`` is committed, a PUBACK nudges, or a re-send is due."""
        self.idle_waits += 1
        due = self._resend_in()
        timeout = None if due is None else real_seconds(self.clock, due) + 0.01
        await first_of(self.outbox.wait_committed(after_seq), self._nudge.wait(), timeout_s=timeout)
        self._nudge.clear()

    def _resend_in(self) -> float | None:
        """Clock seconds until unconfirmed events are due again (None: nothing waits for the store)."""
        if not self.outbox.depth:
            return None
        after = min(self._resend_after_s, self._unrouted_retry_s) if self._unrouted else self._resend_after_s
        return max(0.0, after - self._unconfirmed_for())

    def _should_resend(self) -> bool:
        """Re-send unconfirmed events when the store has been silent too long. Each silent round
        doubles the wait (up to an hour): a fleet whose consumer is down for a while must not fill the
        broker's queues with copies. Any confirmation resets it."""
        waited = self._unconfirmed_for()
        if self._unrouted and waited > self._unrouted_retry_s:
            self._unrouted = False
            self._unrouted_retry_s = min(self._unrouted_retry_s * 2, self.confirm_timeout_s)
            return True
        if waited > self._resend_after_s:
            self._resend_after_s = min(self._resend_after_s * 2, max(RESEND_MAX_S, self.confirm_timeout_s))
            return True
        return False

    def _unconfirmed_for(self) -> float:
        return self.clock.monotonic() - self._progress_at

    def _on_puback(self, mid: int, rc: ReasonCode) -> None:
        seq = self._inflight.pop(mid, None)
        self._space.set()
        if rc.value == NO_MATCHING_SUBSCRIBERS:
            self._unrouted = True
            self._nudge.set()
        if seq is None or not rc.is_failure:
            return
        if rc.value in PERMANENT_PUBACK_FAILURES:
            log.error("broker refused event seq %d for good: %s", seq, rc)
            self._jobs.spawn(self.outbox.reject(seq, str(rc)), f"reject-{seq}")
        else:
            log.warning("broker refused event seq %d for now: %s (will re-send)", seq, rc)

    # -- confirmations from the store --------------------------------------------------------------
    def announce(self) -> None:
        """Publish the birth again (e.g. the heartbeat interval changed: the centre's stale timeout follows)."""
        client = self._client
        if client is not None and client.is_connected:
            i = self.identity
            with contextlib.suppress(MqttError):
                client.publish(topics.status(i.site, i.device), self._status(Presence.ONLINE), qos=1, retain=True)

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/cmd"):
            if self.on_command is not None:
                self.on_command(bytes(msg.payload))
            return
        if msg.topic.endswith("/cfg"):
            if self.on_config is not None:
                self.on_config(bytes(msg.payload))
            return
        try:
            ack = StoredAck.model_validate_json(msg.payload)
        except ValidationError as exc:
            log.warning("ignoring malformed store confirmation on %s: %s", msg.topic, exc.errors()[:1])
            return
        with contextlib.suppress(asyncio.QueueFull):  # a lost confirmation only means a re-send
            self._acks.put_nowait(ack)

    async def _confirm_loop(self) -> None:
        while True:
            ack = await self._acks.get()
            try:
                removed = await self.outbox.confirm(ack.ranges)
            except sqlite3.Error as exc:  # a full disk cannot even log a delete: they are re-sent, deduplicated
                log.warning("could not retire %d stored seq ranges from the outbox: %s", len(ack.ranges), exc)
                continue
            if removed and await self._oldest_moved():
                self._progress_at = self.clock.monotonic()
                self._unrouted_retry_s = UNROUTED_RETRY_S
                self._resend_after_s = self.confirm_timeout_s

    async def _oldest_moved(self) -> bool:
        """Progress is the oldest waiting event leaving the outbox. Newer events confirmed around it do
        not count: else an event whose confirmation was lost (a full disk could not retire it) waits
        behind a busy device's heartbeats for ever instead of being re-sent after confirm_timeout_s."""
        # An outbox the confirmation emptied (the usual case: a heartbeat confirmed) needs no query to say so.
        oldest = await self.outbox.oldest_seq() if self.outbox.depth else None
        moved = oldest is None or oldest != self._oldest
        self._oldest = oldest
        return moved


def _as_replayed(body: bytes) -> bytes:
    # A byte-level flip, not a re-serialisation: a signed event's signature must still hold (protocol/signing.py).
    return as_replayed(body)
