"""A USB QR scanner that presents itself as an HID keyboard, read through evdev.

Such a scanner "types" each code it reads and presses Enter. Read as a keyboard by the kiosk UI it
would type staff codes into whatever field has focus, so the agent grabs the device (EVIOCGRAB)
and decodes its key events itself:

- ``KeyDecoder``: pure, key events -> codes (US layout, Shift tracked, Enter ends a code); a
  partial code is abandoned after a pause between keys, an overlong one (a stuck key) is discarded;
  every drop is counted.
- ``EvdevScanner``: the device (or any event source) -> codes, surviving unplug/replug
  (drivers/evdev_source.py opens, grabs and reopens the device).
- ``SimulatedScanner``: the twin used by the demo and the tests: a string becomes the
  ``InputEvent`` sequence a scanner types, read by the same ``EvdevScanner`` and decoder.

The kernel stamps events with the wall clock; a step of the clock between two keys at worst
abandons one code, a step backwards is never taken for a pause.

evdev (its key codes included) is loaded only by what a configured scanner runs (the decoder, the
device, the twin), never at module level: every agent's config knows this model, and an agent
without a scanner must not load the input stack (tests/test_lean_roles.py).
"""

from __future__ import annotations

import functools
import logging
import string
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from config.base import Section
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


def _key(name: str) -> int:
    from evdev import ecodes

    return int(ecodes.ecodes[f"KEY_{name}"])


def _keymap() -> dict[int, tuple[str, str]]:
    """Key code -> (character, character with Shift) on a US layout, the layout scanners default to."""
    keys: dict[int, tuple[str, str]] = {}
    for digit, shifted in zip("1234567890", "!@#$%^&*()", strict=True):
        keys[_key(digit)] = (digit, shifted)
    for letter in string.ascii_lowercase:
        keys[_key(letter.upper())] = (letter, letter.upper())
    punctuation = {
        "MINUS": "-_", "EQUAL": "=+", "LEFTBRACE": "[{", "RIGHTBRACE": "]}", "SEMICOLON": ";:",
        "APOSTROPHE": "'\"", "GRAVE": "`~", "BACKSLASH": "\\|", "COMMA": ",<", "DOT": ".>",
        "SLASH": "/?", "SPACE": "  ",
    }  # fmt: skip
    for name, pair in punctuation.items():
        keys[_key(name)] = (pair[0], pair[1])
    return keys


def _keypad() -> dict[int, tuple[str, str]]:
    """Some scanners type digits on the keypad (NumLock is theirs, not the host's)."""
    keys = {_key(f"KP{d}"): (d, d) for d in "0123456789"}
    for name, char in {"KPMINUS": "-", "KPPLUS": "+", "KPASTERISK": "*", "KPSLASH": "/", "KPDOT": "."}.items():
        keys[_key(name)] = (char, char)
    return keys


@dataclass(frozen=True, slots=True)
class Keys:
    """The key codes a decoder reads, from evdev's tables."""

    ev_key: int  # the type of a key event
    chars: dict[int, tuple[str, str]]  # key -> (character, with Shift)
    shifts: frozenset[int]
    enters: frozenset[int]
    ignored: frozenset[int]


@functools.cache
def keys() -> Keys:
    """Built once, on first use by a configured scanner."""
    from evdev import ecodes

    return Keys(
        ev_key=ecodes.EV_KEY,
        chars={**_keymap(), **_keypad()},
        shifts=frozenset({_key("LEFTSHIFT"), _key("RIGHTSHIFT")}),
        enters=frozenset({_key("ENTER"), _key("KPENTER")}),
        ignored=frozenset({_key("TAB")}),  # some scanners are set to end with Tab, or send it between fields
    )


class KeyDecoder:
    """Key events -> codes. Pure: no I/O, time only from the events' own timestamps.

    Counters (for health): ``unknown`` keys skipped, ``overflows`` (codes longer than ``max_len``
    discarded), ``abandoned`` (partial codes dropped after a pause or a lost device).
    """

    def __init__(self, max_len: int = 512, gap_s: float = 0.5) -> None:
        if max_len < 1 or gap_s <= 0:
            raise ValueError("max_len must be >= 1 and gap_s > 0")
        self.max_len = max_len
        self.gap_s = gap_s
        self.unknown = 0
        self.overflows = 0
        self.abandoned = 0
        self._chars: list[str] = []
        self._overflowing = False  # the current code is too long: drop the rest of it up to Enter
        self._shift: set[int] = set()
        self._last: float | None = None
        self._keys = keys()

    @property
    def pending(self) -> int:
        """Characters of the code being typed (never more than ``max_len``)."""
        return len(self._chars)

    def feed(self, event: InputEvent) -> str | None:
        """Take one event; return a code when this event (Enter) completes one."""
        k = self._keys
        if event.type != k.ev_key:
            return None  # EV_SYN and EV_MSC (scan codes) come with every key
        self._check_gap(event.timestamp())
        if event.code in k.shifts:
            if event.value == KEY_UP:
                self._shift.discard(event.code)
            else:
                self._shift.add(event.code)
            return None
        if event.value not in (KEY_DOWN, KEY_REPEAT) or event.code in k.ignored:
            return None
        if event.code in k.enters:
            return self._finish()
        chars = k.chars.get(event.code)
        if chars is None:
            self.unknown += 1
            return None
        self._append(chars[1] if self._shift else chars[0])
        return None

    def reset(self) -> None:
        """Forget everything typed so far (the device went away: its Shift state and half a code too)."""
        if self._chars or self._overflowing:
            self.abandoned += 1
        self._chars.clear()
        self._overflowing = False
        self._shift.clear()
        self._last = None

    def _check_gap(self, ts: float) -> None:
        """A scanner types a code in a burst; a pause means the rest of it is not coming (a misread,
        a person pressing keys), and keeping it would glue it in front of the next code."""
        if self._last is not None and ts - self._last > self.gap_s and (self._chars or self._overflowing):
            self.abandoned += 1
            self._chars.clear()
            self._overflowing = False
        self._last = ts

    def _append(self, char: str) -> None:
        if self._overflowing:
            return
        if len(self._chars) >= self.max_len:
            # A stuck key autorepeats forever: drop the code and keep no more of it than this.
            self.overflows += 1
            self._overflowing = True
            self._chars.clear()
            log.warning("QR scanner typed more than %d characters without Enter: discarded", self.max_len)
            return
        self._chars.append(char)

    def _finish(self) -> str | None:
        code = "".join(self._chars)
        overflowed = self._overflowing
        self._chars.clear()
        self._overflowing = False
        return None if overflowed or not code else code


class ScannerError(DeviceError):
    """The scanner cannot be used for a reason waiting will not fix; the message says what to do."""

    what = "QR scanner"


class QrScannerConfig(Section):
    type: Literal["evdev"] = Field(default="evdev", description="Driver selector: an HID-keyboard scanner via evdev")
    device: str = Field(
        min_length=1,
        description="Event device path (best /dev/input/by-id/usb-...-event-kbd, stable across replugs) "
        "or the device's name as `evtest` lists it",
    )
    grab: bool = Field(
        default=True, description="Take the device exclusively, so codes are not also typed into the kiosk UI"
    )
    max_len: int = Field(default=512, ge=1, le=65_536, description="Longer codes are discarded (a stuck key)")
    gap_s: float = Field(
        default=0.5, gt=0, le=60, description="A partial code is abandoned after this long between two keys"
    )
    reopen_initial_s: float = Field(default=0.5, gt=0, description="First delay before reopening a lost device")
    reopen_max_s: float = Field(default=10.0, gt=0, description="Cap of the reopen delay (doubles per failure)")

    @model_validator(mode="after")
    def _backoff_order(self) -> QrScannerConfig:
        if self.reopen_max_s < self.reopen_initial_s:
            raise ValueError("reopen_max_s must be >= reopen_initial_s")
        return self


class EvdevScanner(EvdevReader[str]):
    """Codes from a keyboard-emulating scanner.

    ``source`` stands in for the device (tests, the demo): an event iterator, or a factory called
    again after the source fails with a "device gone" OSError, as the device is reopened after an
    unplug. Without a source, ``cfg.device`` is opened with evdev (and grabbed).
    """

    def __init__(self, cfg: QrScannerConfig, source: EventSource | SourceFactory | None = None) -> None:
        self.cfg = cfg
        self.decoder = KeyDecoder(cfg.max_len, cfg.gap_s)
        # A name is looked up among the devices with an Enter key (a scanner often has a second node
        # of the same name for its consumer-control keys).
        self.source = EvdevSource(
            cfg.device,
            error=ScannerError,
            log=log,
            keys={_key("ENTER")},
            grab=cfg.grab,
            reopen_initial_s=cfg.reopen_initial_s,
            reopen_max_s=cfg.reopen_max_s,
            source=source,
            on_gone=self.decoder.reset,
        )

    def codes(self) -> AsyncGenerator[str, None]:
        """Yield codes until the source ends (a real device never does). Reopens a lost device with
        capped, jittered backoff; any other OSError is a ScannerError. Close with ``aclose()``
        (``contextlib.aclosing``) to release the device at once."""
        return self._decoded(self.decoder.feed)


@functools.cache
def _typeable() -> dict[str, tuple[int, bool]]:
    """Character -> (key, with Shift), from the main block as scanners type (not the keypad)."""
    chars: dict[str, tuple[int, bool]] = {}
    for key, (plain, shifted) in _keymap().items():
        chars.setdefault(plain, (key, False))
        chars.setdefault(shifted, (key, True))
    return chars


class SimulatedScanner(SimulatedDevice):
    """The twin of a keyboard-emulating scanner: ``type()`` queues the events a real one produces
    (Shift pressed around each upper-case letter and symbol, a SYN_REPORT after each key, Enter at
    the end, ``key_interval_s`` apart on the wall clock); ``events`` is the source to hand to
    ``EvdevScanner`` (as the bound method, so it is reopened like a device after ``unplug()``)."""

    def __init__(
        self, key_interval_s: float = 0.002, max_events: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(max_events)
        self.key_interval_s = key_interval_s
        self._clock = clock  # the kernel stamps events with the wall clock
        self._step_us = max(1, round(key_interval_s * 1_000_000))
        self._us = 0  # time of the next event, in whole microseconds as the kernel stamps them

    def type(self, code: str, enter: bool = True) -> None:
        """Queue ``code`` as keystrokes; ``enter=False`` leaves it unfinished, as a misread does.
        Raises ValueError for a character a US keyboard cannot type (a real scanner would garble it)."""
        from evdev import ecodes

        strokes = [self._stroke(char) for char in code]
        self._us = max(round(self._clock() * 1_000_000), self._us)
        for key, shift in strokes:
            if shift:
                self._key(ecodes.KEY_LEFTSHIFT, KEY_DOWN)
            self._key(key, KEY_DOWN)
            self._key(key, KEY_UP)
            if shift:
                self._key(ecodes.KEY_LEFTSHIFT, KEY_UP)
        if enter:
            self._key(ecodes.KEY_ENTER, KEY_DOWN)
            self._key(ecodes.KEY_ENTER, KEY_UP)

    @staticmethod
    def _stroke(char: str) -> tuple[int, bool]:
        try:
            return _typeable()[char]
        except KeyError:
            raise ValueError(f"{char!r} cannot be typed on a US keyboard") from None

    def _key(self, key: int, value: int) -> None:
        from evdev import InputEvent, ecodes

        sec, usec = divmod(self._us, 1_000_000)
        self.put(InputEvent(sec, usec, ecodes.EV_KEY, key, value))
        self.put(InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
        self._us += self._step_us
