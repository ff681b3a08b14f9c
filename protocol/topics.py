"""Topic grammar v1: ``hall/v1/{site}/{device}/...``.

    status            retained; birth ``online``, Will ``offline``, clean ``shutdown``
    evt/{type}        domain events (QoS 1)
    tele/health       heartbeat + health (QoS 1)
    cmd               centre -> device commands
    cmd/ack           device -> centre command state
    cfg               retained desired configuration, centre -> device
    stored            centre -> device: which seqs are committed to the store (the end-to-end ack)

A topic is built only from validated segments, so an identifier can never smuggle in a ``/``, ``+`` or
``#`` and escape its device's prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "hall/v1"
SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class TopicError(ValueError):
    """A topic or an identifier that is not part of the v1 grammar."""


class Kind(StrEnum):
    STATUS = "status"
    EVENT = "evt"
    HEALTH = "tele/health"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"
    CFG = "cfg"
    STORED = "stored"


def check_segment(value: str, what: str = "identifier") -> str:
    if not SEGMENT_RE.fullmatch(value):
        raise TopicError(
            f"{what} {value!r} is not allowed: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


def check_event_type(value: str) -> str:
    if not EVENT_TYPE_RE.fullmatch(value):
        raise TopicError(f"event type {value!r} is not allowed: use dotted lower case, e.g. 'attendance.punch'")
    return value


def device_prefix(site: str, device: str) -> str:
    return f"{PREFIX}/{check_segment(site, 'site')}/{check_segment(device, 'device')}"


def status(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/status"


def event(site: str, device: str, event_type: str) -> str:
    return f"{device_prefix(site, device)}/evt/{check_event_type(event_type)}"


def health(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/tele/health"


def cmd(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/cmd"


def cmd_ack(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/cmd/ack"


def cfg(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/cfg"


def stored(site: str, device: str) -> str:
    return f"{device_prefix(site, device)}/stored"


# Subscriptions of the centre. Wildcards are only ever used here, never in a published topic.
ALL_STATUS = f"{PREFIX}/+/+/status"
ALL_EVENTS = f"{PREFIX}/+/+/evt/#"
ALL_HEALTH = f"{PREFIX}/+/+/tele/health"
ALL_CMD_ACKS = f"{PREFIX}/+/+/cmd/ack"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: the broker hands each message to one member of ``group``."""
    return f"$share/{check_segment(group, 'share group')}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    device: str
    kind: Kind
    event_type: str | None = None


def parse(topic: str) -> Topic:
    """Split a v1 topic; raises TopicError naming what is wrong."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise TopicError(f"topic {topic!r} is not under {PREFIX}/{{site}}/{{device}}/")
    site = check_segment(parts[2], "site")
    device = check_segment(parts[3], "device")
    rest = parts[4:]
    if rest[0] == "evt" and len(rest) == 2:
        return Topic(site, device, Kind.EVENT, check_event_type(rest[1]))
    tail = "/".join(rest)
    try:
        kind = Kind(tail)
    except ValueError:
        raise TopicError(f"topic {topic!r}: unknown channel {tail!r}") from None
    if kind is Kind.EVENT:
        raise TopicError(f"topic {topic!r}: an event topic needs its type, evt/{{type}}")
    return Topic(site, device, kind)
