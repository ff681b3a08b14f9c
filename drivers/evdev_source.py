"""An evdev input device as a stream of events that survives unplug/replug: shared by the HID
devices the agent grabs and decodes itself (the QR scanner, the rating keypad).

- ``EvdevSource``: opens the device (by path, or by name among the devices that have one of the
  wanted keys), grabs it, reads it with ``async_read_loop``; a "device gone" OSError (ENODEV,
  ENOENT, ENXIO) is an outage, logged once and counted, the device reopened with capped, jittered
  backoff; an error waiting will not fix (permissions, another program's grab, not an input
  device) raises the caller's ``DeviceError`` subclass. A source or source factory can stand in
  for the device (tests, simulators).
- ``EvdevReader``: base of a driver reading an ``EvdevSource`` through its decoder.
- ``SimulatedDevice``: the queue behind a simulated twin: events queued now, read from
  ``events`` (the factory to hand to ``EvdevSource``), ``unplug()`` and ``close()``.

evdev is imported where a device is opened, never at module level: every agent's config names the
scanner and keypad models, and an agent without either must not load the input stack.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from contextlib import aclosing
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import evdev
    from evdev import InputEvent

T = TypeVar("T")
EventSource = AsyncIterator["InputEvent"]
SourceFactory = Callable[[], EventSource]
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2  # the value of an EV_KEY event

# The device is unplugged (ENODEV on read), its node is gone (ENOENT), or it is going (ENXIO).
GONE = frozenset({errno.ENODEV, errno.ENOENT, errno.ENXIO})
HINTS = {
    errno.EACCES: "permission denied: add the agent's user to the `input` group or give it a udev rule",
    errno.EPERM: "permission denied: add the agent's user to the `input` group or give it a udev rule",
    errno.EBUSY: "another program has grabbed it: stop it, or set grab = false",
    errno.ENOTTY: "not an input event device: point `device` at /dev/input/by-id/...-event-kbd",
}


class DeviceError(Exception):
    """The device cannot be used for a reason waiting will not fix; the message says what to do.
    A driver subclasses it and sets ``what``, the device as its messages name it."""

    what = "input device"

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"{self.what} {device}: {reason}")
        self.device = device
        self.reason = reason


def _as_factory(source: EventSource | SourceFactory | None) -> SourceFactory | None:
    """A factory is called again after the source fails; a bare iterator is resumed (an async
    generator cannot be: it ends with its exception, and so do the events)."""
    if source is None or callable(source):
        return source
    return lambda: source


class EvdevSource:
    """Events from an input device, reopened after it goes away.

    ``device`` is an event device path, or a device name looked up among the input devices that
    have one of ``keys`` (a device often has a second node of the same name for other keys).
    ``source`` stands in for the device: an event iterator, or a factory called again after the
    source fails with a "device gone" OSError, as the device is reopened after an unplug.
    ``error`` is raised for what waiting will not fix; its ``what`` names the device in the
    messages, which go to ``log``. ``on_gone`` is called on every "device gone" error (a decoder
    forgetting its state). Counters (for health): ``connected``, ``outages``.
    """

    def __init__(
        self,
        device: str,
        *,
        error: type[DeviceError],
        log: logging.Logger,
        keys: Collection[int] = (),
        grab: bool = True,
        reopen_initial_s: float = 0.5,
        reopen_max_s: float = 10.0,
        source: EventSource | SourceFactory | None = None,
        on_gone: Callable[[], object] | None = None,
    ) -> None:
        if reopen_initial_s <= 0 or reopen_max_s < reopen_initial_s:
            raise ValueError("reopen_initial_s must be > 0 and reopen_max_s >= reopen_initial_s")
        self.device = device
        self.error = error
        self.log = log
        self.keys = frozenset(keys)
        self.grab = grab
        self.reopen_initial_s = reopen_initial_s
        self.reopen_max_s = reopen_max_s
        self.on_gone = on_gone
        self.connected = False
        self.outages = 0  # how often the device went away
        self._factory = _as_factory(source)
        self._owns_source = source is None or callable(source)  # a bare iterator is the caller's to close
        self._device: evdev.InputDevice | None = None
        self._down_since: float | None = None
        self._delay = reopen_initial_s

    async def events(self) -> AsyncGenerator[InputEvent, None]:
        """Yield events until the source ends (a real device never does). Close with ``aclose()``
        (``contextlib.aclosing``) to release the device at once."""
        while True:
            events = await self._open()
            try:
                async for event in events:
                    self._delay = self.reopen_initial_s  # it works again: the next outage starts afresh
                    yield event
                self.log.info("%s %s: the event source ended", self.error.what, self.device)
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
        import evdev

        device = evdev.InputDevice(self._find())
        try:
            if self.grab:
                device.grab()
        except OSError:
            device.close()
            raise
        self._device = device
        self.log.info("%s %s opened: %s (%s)", self.error.what, self.device, device.path, device.name)
        return device.async_read_loop()

    def _find(self) -> str:
        """A path is used as is; a name is looked up among the input devices that have one of ``keys``
        (any input device of that name when ``keys`` is empty)."""
        import evdev

        if "/" in self.device:
            return self.device
        for path in evdev.list_devices():
            try:
                device = evdev.InputDevice(path)
            except OSError:
                continue  # not ours to read; another device may be
            try:
                if device.name == self.device and self._has_keys(device):
                    return str(path)
            finally:
                device.close()
        raise FileNotFoundError(errno.ENOENT, f"no input device named {self.device!r}")

    def _has_keys(self, device: evdev.InputDevice) -> bool:
        from evdev import ecodes

        return not self.keys or bool(self.keys & set(device.capabilities().get(ecodes.EV_KEY, [])))

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
            self.log.info("%s %s back after %.1f s", self.error.what, self.device, time.monotonic() - self._down_since)
            self._down_since = None

    def _lost(self, exc: OSError) -> None:
        """Count and log an outage once, however many reopen attempts it takes; raise what waiting
        will not fix (permissions, a wrong device, another program's grab)."""
        if exc.errno not in GONE:
            raise self.error(self.device, HINTS.get(exc.errno or 0, str(exc))) from exc
        if self.on_gone is not None:
            self.on_gone()
        self.connected = False
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.outages += 1
            self.log.warning(
                "%s %s is gone (%s); reopening until it is back", self.error.what, self.device, exc.strerror or exc
            )

    async def _backoff(self) -> None:
        await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
        self._delay = min(self._delay * 2, self.reopen_max_s)


class EvdevReader(Generic[T]):
    """Base of a driver that decodes the events of its ``source``: health counters and decode loop."""

    source: EvdevSource

    @property
    def connected(self) -> bool:
        return self.source.connected

    @property
    def outages(self) -> int:
        """For health: how often the device went away."""
        return self.source.outages

    async def _decoded(self, feed: Callable[[InputEvent], T | None]) -> AsyncGenerator[T, None]:
        """What ``feed`` makes of the events, Nones skipped; closing it releases the device."""
        async with aclosing(self.source.events()) as events:
            async for event in events:
                item = feed(event)
                if item is not None:
                    yield item


_UNPLUG, _END = "unplug", "end"


class SimulatedDevice:
    """The queue of a simulated input device: a twin ``put()``s the events a real device sends;
    ``events`` is the source to hand to ``EvdevSource`` (the bound method, so it is reopened like a
    device after ``unplug()``)."""

    def __init__(self, max_events: int) -> None:
        self._queue: asyncio.Queue[InputEvent | str] = asyncio.Queue(maxsize=max_events)

    def put(self, event: InputEvent) -> None:
        self._queue.put_nowait(event)

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
            if not isinstance(item, str):
                yield item
