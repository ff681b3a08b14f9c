"""The only module that publishes to devices: commands, desired config and store confirmations.

The rule: what a device receives from the centre (its topic, its payload, how long the broker may keep it)
is decided here and nowhere else; the link that carries it is the caller's (the consumer's receive session,
or the short link of ``hallfleet command``). A command or config is committed before it is published, so a
publish that fails costs nothing: the command republish job sends what is still queued, a config is retained.
A lost store confirmation costs the device one re-send of events the store already holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from broker.store.keys import DeviceKey
from protocol import topics
from protocol.commands import Command, DesiredConfig
from protocol.envelope import StoredAck

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0

# Mosquitto stamps a message's expiry in whole seconds of its own clock when it stores the message, and drops it
# once that clock has passed the stamped second: a copy may outlive its interval by up to a second, plus the
# publish's own travel. The centre declares a queued command expired only this long after ``expires_at``, so a
# command the centre has recorded as expired can no longer reach the device (the device checks ``expires_at``
# itself only when its clock is known to be synced).
BROKER_EXPIRY_SLACK_S = 3.0


class Link(Protocol):
    """What carries the messages: a QoS 1 publish that returns on the broker's PUBACK (raising otherwise),
    and a QoS 0 send that says whether it was written."""

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None
    ) -> None: ...

    def send(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> bool: ...


def command_ttl_s(cmd: Command, now: datetime) -> int:
    """Whole seconds the broker may keep a command for a device that is away: what is left of its life, rounded
    down (never past ``expires_at``); 0 when less than a second is left, too little to send it at all."""
    return max(0, int((cmd.expires_at - now).total_seconds()))


async def send_command(link: Link, key: DeviceKey, cmd: Command, now: datetime) -> None:
    """One command, QoS 1 with the command's remaining life as message expiry; raises what the link raises."""
    payload = cmd.model_dump_json().encode()
    await link.publish(topics.cmd(key.site, key.device), payload, expiry_s=command_ttl_s(cmd, now))


async def send_config(link: Link, key: DeviceKey, desired: DesiredConfig) -> None:
    """The device's desired config, retained: a device that connects later reads it on subscribing."""
    await link.publish(topics.cfg(key.site, key.device), desired.model_dump_json().encode(), retain=True)


async def send_commands(link: Link, commands: Sequence[tuple[DeviceKey, Command]], now: datetime) -> int:
    """Commands the rules or jobs committed, all at once; what fails stays queued for the republish job.
    Returns how many the broker took."""
    live = [(key, cmd) for key, cmd in commands if command_ttl_s(cmd, now) > 0]
    if not live:
        return 0
    results = await asyncio.gather(
        *(asyncio.wait_for(send_command(link, key, cmd, now), COMMAND_TIMEOUT_S) for key, cmd in live),
        return_exceptions=True,
    )
    for (key, cmd), result in zip(live, results, strict=True):
        if isinstance(result, BaseException):
            log.info("command %s for %s not published now (%s): the republish job retries", cmd.id, key, result)
    return sum(1 for r in results if not isinstance(r, BaseException))


def confirm_stored(link: Link, held: Iterable[tuple[DeviceKey, int]]) -> int:
    """Tell each device which of its events the store now holds (stored or kept as a dead letter), one
    message per device, QoS 0. Returns the messages not written (counted by the link as well)."""
    seqs: dict[DeviceKey, list[int]] = defaultdict(list)
    for key, seq in held:
        seqs[key].append(seq)
    skipped = 0
    for key, device_seqs in seqs.items():
        payload = StoredAck.from_seqs(device_seqs).model_dump_json().encode()
        if not link.send(topics.stored(key.site, key.device), payload):
            skipped += 1
    return skipped
