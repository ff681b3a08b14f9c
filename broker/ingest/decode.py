"""Decode and validate: one received message becomes one Item, parsed once, whatever it holds.

The rules: every message the receive stage hands over becomes exactly one Item (an event row, a status, a
dead letter with the reason and the raw bytes, or a bare acknowledgement for a cleared retained status), so
nothing is acknowledged that was not accounted for; the envelope is parsed once (``validate_event``) and
everything stored is built from that parse; a bug in here costs one message (dead-lettered as malformed
with the error), never the consumer. The broker's ``$SYS`` drop counter is not a device message: it is read
by ``BrokerDrops`` and never becomes an Item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from broker.access.signals import ALARM_TYPES, alarm_signals
from broker.hall.mirror import HALL, BadSnapshot, Leads, hall_topic, parse_snapshot
from broker.ingest.items import Item, Meaning, Seen, dead_letter
from broker.ingest.session import Message
from broker.ingest.signatures import Signatures
from broker.rules.consumables import LevelReading
from broker.rules.incidents import signals_from_event
from broker.store.db import StatusUpdate
from broker.store.keys import DeviceKey, EventRef
from protocol import topics
from protocol.bounds import printable
from protocol.commands import CommandAck, ConfigReport
from protocol.envelope import Envelope, Frozen, StatusMessage, settle_clock
from protocol.events import REGISTRY, KioskConsumable, Rejected, RejectReason, errors_of, validate_event
from protocol.signing import SignatureError
from protocol.topics import Kind, TopicError
from runtime.clock import Clock

log = logging.getLogger(__name__)

SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
# Event types the incident rules read; every other event goes straight to the store.
SIGNAL_TYPES = frozenset({"kiosk.state", "kiosk.fault", "device.fault", "kiosk.consumable"}) | ALARM_TYPES
# Events whose payload the store applies beyond the events row (broker/store/commands.py).
REPORT_TYPES = frozenset(name for name, spec in REGISTRY.items() if spec.model in (CommandAck, ConfigReport))
EVENT_KINDS = (Kind.EVENT, Kind.HEALTH, Kind.CMD_ACK)
CACHED_MAX = 100_000  # topics and device keys remembered (a fleet's devices, times their few topics)


@dataclass(slots=True)
class BrokerDrops:
    """Mosquitto's own count of messages it dropped past its queue limits ($SYS): the only trace of them."""

    dropped: int = 0

    def read(self, payload: bytes) -> None:
        try:
            value = int(payload)
        except ValueError:
            return
        if value > self.dropped:
            log.warning(
                "the broker has dropped %d messages (was %d): raise max_queued_messages in its config; "
                "agents re-send what the store never confirmed",
                value,
                self.dropped,
            )
        self.dropped = value


class Decoder:
    """``decoder(message, now) -> Item``. ``now`` is the receive time (one per socket read: every message of
    it arrived then), which also settles a device clock that is off; ``clock`` stamps dead letters."""

    def __init__(self, clock: Clock, signatures: Signatures | None = None, leads: Leads | None = None) -> None:
        self.clock = clock
        self.leads = leads  # the centre's: hall consumers' lead statuses and incidents are taken (broker/hall/)
        self.signatures = signatures or Signatures()  # none given: no key known, a signed event is refused
        # Per-message work the stream repeats: a device's topic parses the same every time, and its key is
        # one object. Both bounded (cleared when full): a flood of invented topics costs memory once.
        self._topics: dict[str, topics.Topic] = {}
        self._keys: dict[tuple[str, str], DeviceKey] = {}

    def __call__(self, msg: Message, now: datetime | None = None) -> Item:
        try:
            return self._decode(msg, self.clock.now() if now is None else now)
        except Exception as exc:  # a bug must cost one message (kept, with why), never the consumer
            log.exception("unexpected error on %s", printable(msg.topic[:200]))
            return self.dead(msg, RejectReason.MALFORMED, f"internal error: {exc!r}")

    def _decode(self, msg: Message, now: datetime) -> Item:
        t = self._topics.get(msg.topic)
        if t is None:
            try:
                t = topics.parse(msg.topic)
            except TopicError as exc:
                if self.leads is not None and (h := hall_topic(msg.topic)) is not None:
                    return self._hall(msg, *h)  # outside the device grammar, so found only here: no cost per event
                return self.dead(msg, RejectReason.BAD_TOPIC, str(exc))
            _remember(self._topics, msg.topic, t)
        if t.kind is Kind.STATUS:
            return self._status(msg, self._key(t.site, t.device), now)
        if t.kind not in EVENT_KINDS:
            return self.dead(msg, RejectReason.BAD_TOPIC, f"consumer does not take {t.kind.value} messages")
        try:
            env, payload = validate_event(t, msg.payload)
        except Rejected as exc:
            return self.dead(msg, exc.reason, exc.detail)
        env = settle_clock(env, now)
        try:
            signed = self.signatures.check(env, msg.payload)
        except SignatureError as exc:
            return self.dead(msg, RejectReason.BAD_SIGNATURE, str(exc))
        key = self._key(env.site, env.device)
        row = {
            "site": env.site,
            "device": env.device,
            "id": env.id,
            "type": env.type,
            "seq": env.seq,
            "boot_id": env.boot_id,
            "ts": env.ts,
            "clock_synced": env.clock_synced,
            "replayed": env.replayed,
            "received_at": now,
            # The typed payload with the defaults a device left out, which readers take from the stored JSON.
            # Re-dumping it costs about a tenth of the validation (docs/ingest.md, "Where the time goes").
            "data": payload.model_dump_json(),
        }
        if signed is not None and env.sig is not None:
            row |= {"sig_key": signed.kid, "sig": env.sig.s, "signed": signed.message.decode()}
        if env.type in SIGNAL_TYPES or env.type in REPORT_TYPES:
            return self._meaningful(msg, env, payload, key, row, now)
        return Item(msg.topic, msg.payload, msg.packet_id, event=row, seen=Seen(key, now), confirm=(key, env.seq))

    def _meaningful(
        self, msg: Message, env: Envelope, payload: Frozen, key: DeviceKey, row: dict[str, Any], now: datetime
    ) -> Item:
        """An event that means more than a row: incident signals, a consumable level, a command's or a config's
        answer."""
        meaning = None
        if env.type in SIGNAL_TYPES:
            level = None
            if isinstance(payload, KioskConsumable):
                level = LevelReading(
                    key.text, env.site, env.device, payload.consumable, payload.state, payload.level_pct, env.ts
                )
            ref = EventRef(env.site, env.device, env.id)
            signals = tuple(signals_from_event(env, payload, now)) + tuple(alarm_signals(env, payload, now))
            meaning = Meaning(ref, signals, level)
        return Item(
            msg.topic,
            msg.payload,
            msg.packet_id,
            event=row,
            seen=Seen(key, now),
            meaning=meaning,
            ack=(key, payload, now) if isinstance(payload, CommandAck) else None,
            config_report=(key, env.type == "config.applied", payload, now)
            if isinstance(payload, ConfigReport)
            else None,
            confirm=(key, env.seq),
        )

    def _hall(self, msg: Message, site: str, what: str) -> Item:
        """A hall consumer's lead status (noted at once: it decides for the rules of this very batch) or an
        incident snapshot (applied by the rules stage in the commit's transaction)."""
        assert self.leads is not None
        if what == "lead":
            self.leads.note(site, msg.payload)
            return Item(msg.topic, msg.payload, msg.packet_id)
        try:
            snap = parse_snapshot(site, msg.payload)
        except BadSnapshot as exc:
            return self.dead(msg, RejectReason.MALFORMED, str(exc))
        ref = EventRef(site, HALL, snap.incident.id)
        return Item(msg.topic, msg.payload, msg.packet_id, meaning=Meaning(ref, mirror=snap))

    def _key(self, site: str, device: str) -> DeviceKey:
        key = self._keys.get((site, device))
        if key is None:
            key = DeviceKey(site, device)
            _remember(self._keys, (site, device), key)
        return key

    def _status(self, msg: Message, key: DeviceKey, at: datetime) -> Item:
        if not msg.payload:  # a retained status being cleared (device removed): only to acknowledge
            return Item(msg.topic, b"", msg.packet_id)
        try:
            status = StatusMessage.model_validate_json(msg.payload)
        except ValidationError as exc:
            return self.dead(msg, RejectReason.MALFORMED, errors_of(exc))
        update = StatusUpdate(key.site, key.device, status, msg.retain, at)
        # A retained status replayed on subscribing is old news: it proves nothing about the device now.
        return Item(msg.topic, msg.payload, msg.packet_id, status=update, seen=None if msg.retain else Seen(key, at))

    def dead(self, msg: Message, reason: RejectReason, detail: str) -> Item:
        log.warning("dead letter (%s) on %s: %s", reason.value, printable(msg.topic[:200]), printable(detail[:200]))
        row = dead_letter(msg.topic, msg.payload, reason.value, detail, self.clock.now())
        return Item(msg.topic, msg.payload, msg.packet_id, dead=row)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHED_MAX:
        cache.clear()
    cache[key] = value
