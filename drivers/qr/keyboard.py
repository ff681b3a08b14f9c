"""A USB QR scanner that presents itself as an HID keyboard, read through evdev.

Such a scanner "types" each code it reads and presses Enter. Read as a keyboard by the kiosk UI it
would type staff codes into whatever field has focus, so the agent grabs the device (EVIOCGRAB)
and decodes its key events itself:

- ``KeyDecoder``: pure, key events -> codes (US layout, Shift tracked, Enter ends a code); a
  partial code is abandoned after a pause between keys, an overlong one (a stuck key) is discarded;
  every drop is counted.
- ``EvdevScanner``: the device (or any event source) -> codes, surviving unplug/replug.
- ``SimulatedScanner``: the twin used by the demo and the tests: a string becomes the
  ``InputEvent`` sequence a scanner types, read by the same ``EvdevScanner`` and decoder.

The kernel stamps events with the wall clock; a step of the clock between two keys at worst
abandons one code, a step backwards is never taken for a pause.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import string
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Literal

import evdev
from evdev import InputEvent, ecodes
from pydantic import Field, model_validator

from protocol.settings import Section

log = logging.getLogger(__name__)

EventSource = AsyncIterator[InputEvent]
SourceFactory = Callable[[], EventSource]


def _key(name: str) -> int:
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


KEYMAP: dict[int, tuple[str, str]] = {**_keymap(), **_keypad()}
SHIFTS = frozenset({_key("LEFTSHIFT"), _key("RIGHTSHIFT")})
ENTERS = frozenset({_key("ENTER"), _key("KPENTER")})
IGNORED = frozenset({_key("TAB")})  # some scanners are set to end with Tab, or send it between fields
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2


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

    @property
    def pending(self) -> int:
        """Characters of the code being typed (never more than ``max_len``)."""
        return len(self._chars)

    def feed(self, event: InputEvent) -> str | None:
        """Take one event; return a code when this event (Enter) completes one."""
        if event.type != ecodes.EV_KEY:
            return None  # EV_SYN and EV_MSC (scan codes) come with every key
        self._check_gap(event.timestamp())
        if event.code in SHIFTS:
            if event.value == KEY_UP:
                self._shift.discard(event.code)
            else:
                self._shift.add(event.code)
            return None
        if event.value not in (KEY_DOWN, KEY_REPEAT) or event.code in IGNORED:
            return None
        if event.code in ENTERS:
            return self._finish()
        chars = KEYMAP.get(event.code)
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


class ScannerError(Exception):
    """The scanner cannot be used for a reason waiting will not fix; the message says what to do."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"QR scanner {device}: {reason}")
        self.device = device
        self.reason = reason


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


# The device is unplugged (ENODEV on read), its node is gone (ENOENT), or it is going (ENXIO).
_GONE = frozenset({errno.ENODEV, errno.ENOENT, errno.ENXIO})
_HINTS = {
    errno.EACCES: "permission denied: add the agent's user to the `input` group or give it a udev rule",
    errno.EPERM: "permission denied: add the agent's user to the `input` group or give it a udev rule",
    errno.EBUSY: "another program has grabbed it: stop it, or set grab = false",
    errno.ENOTTY: "not an input event device: point `device` at /dev/input/by-id/...-event-kbd",
}


def _as_factory(source: EventSource | SourceFactory | None) -> SourceFactory | None:
    """A factory is called again after the source fails; a bare iterator is resumed (an async
    generator cannot be: it ends with its exception, and so do the codes)."""
    if source is None or callable(source):
        return source
    return lambda: source


class EvdevScanner:
    """Codes from a keyboard-emulating scanner.

    ``source`` stands in for the device (tests, the demo): an event iterator, or a factory called
    again after the source fails with a "device gone" OSError, as the device is reopened after an
    unplug. Without a source, ``cfg.device`` is opened with evdev (and grabbed).
    """

    def __init__(self, cfg: QrScannerConfig, source: EventSource | SourceFactory | None = None) -> None:
        self.cfg = cfg
        self.decoder = KeyDecoder(cfg.max_len, cfg.gap_s)
        self.connected = False
        self.outages = 0  # for health: how often the scanner went away
        self._factory = _as_factory(source)
        self._owns_source = source is None or callable(source)  # a bare iterator is the caller's to close
        self._device: evdev.InputDevice | None = None
        self._down_since: float | None = None
        self._delay = cfg.reopen_initial_s

    async def codes(self) -> AsyncGenerator[str, None]:
        """Yield codes until the source ends (a real device never does). Reopens a lost device with
        capped, jittered backoff; any other OSError is a ScannerError. Close with ``aclose()``
        (``contextlib.aclosing``) to release the device at once."""
        while True:
            events = await self._open()
            try:
                async for event in events:
                    self._delay = self.cfg.reopen_initial_s  # it works again: the next outage starts afresh
                    code = self.decoder.feed(event)
                    if code is not None:
                        yield code
                log.info("QR scanner %s: the event source ended", self.cfg.device)
                return
            except OSError as exc:
                self._lost(exc)
            finally:
                await self._close(events)
            await self._backoff()

    async def _open(self) -> EventSource:
        while True:
            try:
                events = self._factory() if self._factory is not None else self._open_device()
            except OSError as exc:
                self._lost(exc)
            else:
                self._up()
                return events
            await self._backoff()

    def _open_device(self) -> EventSource:
        device = evdev.InputDevice(self._find())
        try:
            if self.cfg.grab:
                device.grab()
        except OSError:
            device.close()
            raise
        self._device = device
        log.info("QR scanner %s opened: %s (%s)", self.cfg.device, device.path, device.name)
        return device.async_read_loop()

    def _find(self) -> str:
        """A path is used as is; a name is looked up among the input devices that have an Enter key
        (a scanner often has a second node of the same name for its consumer-control keys)."""
        if "/" in self.cfg.device:
            return self.cfg.device
        for path in evdev.list_devices():
            try:
                device = evdev.InputDevice(path)
            except OSError:
                continue  # not ours to read; another device may be
            try:
                keys = device.capabilities().get(ecodes.EV_KEY, [])
                if device.name == self.cfg.device and ecodes.KEY_ENTER in keys:
                    return str(path)
            finally:
                device.close()
        raise FileNotFoundError(errno.ENOENT, f"no input device named {self.cfg.device!r}")

    async def _close(self, events: EventSource) -> None:
        device, self._device = self._device, None
        self.connected = False
        if device is not None:
            device.close()  # also releases the grab
        aclose = getattr(events, "aclose", None)
        if aclose is not None and self._owns_source:
            await aclose()

    def _up(self) -> None:
        self.connected = True
        if self._down_since is not None:
            log.info("QR scanner %s back after %.1f s", self.cfg.device, time.monotonic() - self._down_since)
            self._down_since = None

    def _lost(self, exc: OSError) -> None:
        """Count and log an outage once, however many reopen attempts it takes; raise what waiting
        will not fix (permissions, a wrong device, another program's grab)."""
        if exc.errno not in _GONE:
            reason = _HINTS.get(exc.errno or 0, str(exc))
            raise ScannerError(self.cfg.device, reason) from exc
        self.decoder.reset()
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.outages += 1
            log.warning("QR scanner %s is gone (%s); reopening until it is back", self.cfg.device, exc.strerror or exc)

    async def _backoff(self) -> None:
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
        self._delay = min(self._delay * 2, self.cfg.reopen_max_s)


def _typeable() -> dict[str, tuple[int, bool]]:
    """Character -> (key, with Shift), from the main block as scanners type (not the keypad)."""
    chars: dict[str, tuple[int, bool]] = {}
    for key, (plain, shifted) in _keymap().items():
        chars.setdefault(plain, (key, False))
        chars.setdefault(shifted, (key, True))
    return chars


_TYPEABLE = _typeable()
_UNPLUG, _END = "unplug", "end"


class SimulatedScanner:
    """The twin of a keyboard-emulating scanner: ``type()`` queues the events a real one produces
    (Shift pressed around each upper-case letter and symbol, a SYN_REPORT after each key, Enter at
    the end, ``key_interval_s`` apart on the wall clock); ``events`` is the source to hand to
    ``EvdevScanner`` (as the bound method, so it is reopened like a device after ``unplug()``)."""

    def __init__(
        self, key_interval_s: float = 0.002, max_events: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.key_interval_s = key_interval_s
        self._clock = clock  # the kernel stamps events with the wall clock
        self._queue: asyncio.Queue[InputEvent | str] = asyncio.Queue(maxsize=max_events)
        self._step_us = max(1, round(key_interval_s * 1_000_000))
        self._us = 0  # time of the next event, in whole microseconds as the kernel stamps them

    def type(self, code: str, enter: bool = True) -> None:
        """Queue ``code`` as keystrokes; ``enter=False`` leaves it unfinished, as a misread does.
        Raises ValueError for a character a US keyboard cannot type (a real scanner would garble it)."""
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

    def unplug(self) -> None:
        """The device vanishes after the events queued so far: the reader gets ENODEV."""
        self._queue.put_nowait(_UNPLUG)

    def close(self) -> None:
        """End the stream after the events queued so far (a real device never ends)."""
        self._queue.put_nowait(_END)

    async def events(self) -> AsyncIterator[InputEvent]:
        while True:
            item = await self._queue.get()
            if item == _END:
                return
            if item == _UNPLUG:
                raise OSError(errno.ENODEV, "No such device")
            if isinstance(item, InputEvent):
                yield item

    @staticmethod
    def _stroke(char: str) -> tuple[int, bool]:
        try:
            return _TYPEABLE[char]
        except KeyError:
            raise ValueError(f"{char!r} cannot be typed on a US keyboard") from None

    def _key(self, key: int, value: int) -> None:
        sec, usec = divmod(self._us, 1_000_000)
        self._queue.put_nowait(InputEvent(sec, usec, ecodes.EV_KEY, key, value))
        self._queue.put_nowait(InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
        self._us += self._step_us
