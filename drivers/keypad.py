"""The keypad of a 好差评 rating pad, read through evdev.

Rating pads are USB HID keypads (or a numeric keypad glued under a printed overlay): five rating keys
for the citizen and, on some models, keys for the staff (暂停服务, 请稍后, service start/end). Like the
QR scanner (drivers/qr/keyboard.py) the device is grabbed, so key presses never reach whatever else
reads the keyboard, and it is reopened after an unplug (drivers/evdev_source.py, as the scanner's).

- ``KeypadDecoder``: pure, key events -> ``KeyPress`` (the configured action). Autorepeat is ignored
  (a key held down is one press), presses of the same key within ``debounce_ms`` collapse (contact
  bounce, a nervous double tap); both are counted.
- ``KeypadReader``: the device (or any event source) -> presses, surviving unplug/replug.
- ``SimulatedKeypad``: the twin for the demo and the tests: ``press("KEY_5")`` queues the real
  ``InputEvent`` sequence a keypad sends, read by the same reader and decoder.

evdev is imported only by what a configured keypad runs (checking its key names, the decoder, the twin),
never at module level: every agent's config knows this model, and an agent without a keypad must not
load the input stack (tests/test_lean_roles.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator, model_validator

from config.base import Section

# The scanner's device plumbing is the keypad's too: one device-reopening approach.
from drivers.evdev_source import (
    KEY_DOWN,
    KEY_REPEAT,
    KEY_UP,
    DeviceError,
    EvdevReader,
    EvdevSource,
    EventSource,
    SimulatedDevice,
    SourceFactory,
)

if TYPE_CHECKING:
    from evdev import InputEvent

log = logging.getLogger(__name__)

KeyAction = Literal[
    "rate_1", "rate_2", "rate_3", "rate_4", "rate_5", "pause", "resume", "please_wait", "service_start", "service_end"
]
RATE_ACTIONS: dict[str, int] = {f"rate_{n}": n for n in range(1, 6)}
STAFF_ACTIONS = frozenset({"pause", "resume", "please_wait", "service_start", "service_end"})
# Five keys, the digit being the level (5 非常满意 ... 1 非常不满意); a pad laid out otherwise says so in config.
DEFAULT_KEYS: dict[str, KeyAction] = {
    "KEY_1": "rate_1", "KEY_2": "rate_2", "KEY_3": "rate_3", "KEY_4": "rate_4", "KEY_5": "rate_5"
}  # fmt: skip


def key_code(name: str) -> int:
    """``"KEY_KP5"`` -> its evdev code; ValueError for a name evdev does not know."""
    from evdev import ecodes

    code = ecodes.ecodes.get(name)
    if not isinstance(code, int) or not name.startswith(("KEY_", "BTN_")):
        raise ValueError(f"{name!r} is not an evdev key name (see `evtest`: KEY_1, KEY_KP5, KEY_F1, ...)")
    return code


class _KeysConfig(Section):
    keys: dict[str, KeyAction] = Field(
        default_factory=lambda: dict(DEFAULT_KEYS),
        description="evdev key name -> action: rate_1..rate_5 (5 非常满意 ... 1 非常不满意), and the staff keys "
        "pause, resume, please_wait, service_start, service_end where the pad has them",
    )
    debounce_ms: int = Field(default=150, ge=0, le=2000, description="Presses of one key closer than this are one")

    @field_validator("keys")
    @classmethod
    def _known_keys(cls, keys: dict[str, KeyAction]) -> dict[str, KeyAction]:
        for name in keys:
            key_code(name)
        levels = {RATE_ACTIONS[a] for a in keys.values() if a in RATE_ACTIONS}
        if len(levels) < 2:  # G8: the scale may be 好/差 or 好/中/差, mapped onto 1-5; one level is no rating
            raise ValueError("at least two rating levels (rate_1 .. rate_5) need a key")
        return keys


class EvdevKeypadConfig(_KeysConfig):
    type: Literal["evdev"] = Field(default="evdev", description="Driver selector: an HID keypad via evdev")
    device: str = Field(
        min_length=1,
        description="Event device path (best /dev/input/by-id/usb-...-event-kbd) or its name as `evtest` lists it",
    )
    grab: bool = Field(default=True, description="Take the device exclusively, so no other program sees the keys")
    reopen_initial_s: float = Field(default=0.5, gt=0, description="First delay before reopening a lost device")
    reopen_max_s: float = Field(default=10.0, gt=0, description="Cap of the reopen delay (doubles per failure)")

    @model_validator(mode="after")
    def _backoff_order(self) -> EvdevKeypadConfig:
        if self.reopen_max_s < self.reopen_initial_s:
            raise ValueError("reopen_max_s must be >= reopen_initial_s")
        return self


class SimulatedKeypadConfig(_KeysConfig):
    type: Literal["sim"] = Field(default="sim", description="The SimulatedKeypad twin (demo, tests)")


KeypadConfig = Annotated[EvdevKeypadConfig | SimulatedKeypadConfig, Field(discriminator="type")]


@dataclass(frozen=True, slots=True)
class KeyPress:
    action: KeyAction
    key: str
    ts: float  # the kernel's wall-clock stamp of the key going down

    @property
    def level(self) -> int | None:
        """The rating level of a rating key, None for a staff key."""
        return RATE_ACTIONS.get(self.action)


class KeypadDecoder:
    """Key events -> presses. Pure: time only from the events' own stamps.

    Counters (for health): ``unknown`` keys not in the map, ``bounced`` presses collapsed into the
    one before, ``repeats`` autorepeat events ignored.
    """

    def __init__(self, keys: dict[str, KeyAction], debounce_ms: int = 150) -> None:
        from evdev import ecodes

        self._ev_key = ecodes.EV_KEY
        self.actions = {key_code(name): (name, action) for name, action in keys.items()}
        self.debounce_s = debounce_ms / 1000
        self.unknown = 0
        self.bounced = 0
        self.repeats = 0
        self._last_down: dict[int, float] = {}

    def feed(self, event: InputEvent) -> KeyPress | None:
        """Take one event; return a press when this event is a key going down that counts."""
        if event.type != self._ev_key or event.value == KEY_UP:
            return None  # EV_SYN, EV_MSC scan codes and key-ups come with every press
        if event.value == KEY_REPEAT:
            self.repeats += 1  # a held key is one press: the citizen leaning on 非常不满意 is one rating
            return None
        mapped = self.actions.get(event.code)
        if mapped is None:
            self.unknown += 1
            return None
        ts = event.timestamp()
        last = self._last_down.get(event.code)
        # Measured from the last press that counted, so chatter cannot extend the window; a clock
        # stepped backwards (negative gap) is never taken for a bounce.
        if last is not None and 0 <= ts - last < self.debounce_s:
            self.bounced += 1
            return None
        self._last_down[event.code] = ts
        return KeyPress(mapped[1], mapped[0], ts)

    def reset(self) -> None:
        """The device went away: a press after the replug is a new press, whatever its stamp."""
        self._last_down.clear()


class KeypadError(DeviceError):
    """The keypad cannot be used for a reason waiting will not fix; the message says what to do."""

    what = "rating keypad"


class KeypadReader(EvdevReader[KeyPress]):
    """Presses from a rating keypad.

    ``source`` stands in for the device (tests, the demo): an event iterator, or a factory called again
    after the source fails with a "device gone" OSError, as the device is reopened after an unplug.
    Without a source, ``cfg.device`` is opened with evdev (and grabbed).
    """

    def __init__(
        self, cfg: EvdevKeypadConfig | SimulatedKeypadConfig, source: EventSource | SourceFactory | None = None
    ) -> None:
        if source is None and not isinstance(cfg, EvdevKeypadConfig):
            raise ValueError("a simulated keypad needs its event source (SimulatedKeypad.events)")
        self.cfg = cfg
        self.name = cfg.device if isinstance(cfg, EvdevKeypadConfig) else "sim"
        self.decoder = KeypadDecoder(cfg.keys, cfg.debounce_ms)
        evdev_cfg = cfg if isinstance(cfg, EvdevKeypadConfig) else None
        # A name is looked up among the devices with one of the configured keys (a keypad often has
        # a second node of the same name for its system keys).
        self.source = EvdevSource(
            self.name,
            error=KeypadError,
            log=log,
            keys=self.decoder.actions,
            grab=evdev_cfg.grab if evdev_cfg else True,
            reopen_initial_s=evdev_cfg.reopen_initial_s if evdev_cfg else 0.05,
            reopen_max_s=evdev_cfg.reopen_max_s if evdev_cfg else 1.0,
            source=source,
            on_gone=self.decoder.reset,
        )

    def presses(self) -> AsyncGenerator[KeyPress, None]:
        """Yield presses until the source ends (a real device never does). Reopens a lost device with
        capped, jittered backoff; any other OSError is a KeypadError. Close with ``aclose()``."""
        return self._decoded(self.decoder.feed)


class SimulatedKeypad(SimulatedDevice):
    """The twin of an HID keypad: ``press()`` queues what a real one sends for a key (MSC_SCAN, key
    down, SYN_REPORT, key up after ``hold_s``, SYN_REPORT), stamped on the wall clock (injectable);
    ``events`` is the source to hand to ``KeypadReader`` (the bound method, so it is reopened like a
    device after ``unplug()``)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_events: int = 10_000) -> None:
        super().__init__(max_events)
        self._clock = clock  # the kernel stamps events with the wall clock
        self._us = 0  # never earlier than the last event queued, as the kernel's stamps

    def press(self, key: str, hold_s: float = 0.08, repeats: int = 0) -> None:
        """One press of ``key``; ``repeats`` autorepeat events (value 2) follow while it is held, the
        first after the kernel's 250 ms delay and then every 33 ms, as a key leaned on sends."""
        from evdev import ecodes

        code = key_code(key)
        self._us = max(round(self._clock() * 1_000_000), self._us)
        start = self._us
        self._event(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 | code)  # HID keypads send one; the decoder skips it
        self._event(ecodes.EV_KEY, code, KEY_DOWN, sync=True)
        for n in range(repeats):
            self._us = start + 250_000 + n * 33_000
            self._event(ecodes.EV_KEY, code, KEY_REPEAT, sync=True)
        self._us = max(self._us, start + round(hold_s * 1_000_000))
        self._event(ecodes.EV_KEY, code, KEY_UP, sync=True)

    def _event(self, type_: int, code: int, value: int, sync: bool = False) -> None:
        from evdev import InputEvent, ecodes

        sec, usec = divmod(self._us, 1_000_000)
        self.put(InputEvent(sec, usec, type_, code, value))
        if sync:
            self.put(InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
