"""Pin the evdev device plumbing the QR scanner and the rating keypad share: a device opened by path
or by name and grabbed, "device gone" errors as one logged outage with capped backoff, the caller's
error (with a hint) for what waiting will not fix, and injected sources for tests and twins. This
kernel has no input devices: evdev's InputDevice and list_devices are stood in for where needed."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, ClassVar

import evdev
import pytest
from evdev import InputEvent, ecodes

from drivers import evdev_source
from drivers.evdev_source import DeviceError, EvdevSource, SimulatedDevice

log = logging.getLogger("tests.evdev_source")


class GadgetError(DeviceError):
    what = "gadget"


def ev(code: int, value: int = 1) -> InputEvent:
    return InputEvent(1_741_000_000, 0, ecodes.EV_KEY, code, value)


def source(**kw: Any) -> EvdevSource:
    return EvdevSource(
        kw.pop("device", "/dev/input/event7"),
        error=GadgetError,
        log=log,
        **{"reopen_initial_s": 0.001, "reopen_max_s": 0.002, **kw},
    )


async def collect(src: EvdevSource) -> list[InputEvent]:
    async with aclosing(src.events()) as events:
        return [e async for e in events]


class FakeDevice:
    """Just what EvdevSource uses of evdev.InputDevice."""

    opened: ClassVar[list[FakeDevice]] = []

    def __init__(self, path: str, name: str = "Gadget", keys: tuple[int, ...] = (), grab_errno: int = 0) -> None:
        self.path, self.name, self.keys, self.grab_errno = path, name, keys, grab_errno
        self.grabbed = self.closed = False
        self.events = [ev(ecodes.KEY_A), ev(ecodes.KEY_A, 0)]

    def capabilities(self) -> dict[int, list[int]]:
        return {ecodes.EV_KEY: list(self.keys)}

    def grab(self) -> None:
        if self.grab_errno:
            raise OSError(self.grab_errno, "busy")
        self.grabbed = True

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self) -> AsyncIterator[InputEvent]:
        for event in self.events:
            yield event


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """path -> FakeDevice arguments; evdev sees these devices and no others."""
    table: dict[str, dict[str, Any]] = {}
    opened: list[FakeDevice] = []

    def open_(path: str) -> FakeDevice:
        if path not in table:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        device = FakeDevice(path, **table[path])
        opened.append(device)
        return device

    monkeypatch.setattr(evdev, "InputDevice", open_)
    monkeypatch.setattr(evdev, "list_devices", lambda: list(table))
    FakeDevice.opened = opened
    return table


async def test_a_device_by_path_is_grabbed_read_and_closed(devices: dict[str, dict[str, Any]]) -> None:
    devices["/dev/input/event7"] = {}
    src = source()
    assert [e.code for e in await collect(src)] == [ecodes.KEY_A, ecodes.KEY_A]
    (device,) = FakeDevice.opened
    assert device.grabbed and device.closed
    assert (src.connected, src.outages) == (False, 0)


async def test_grab_false_leaves_the_device_shared(devices: dict[str, dict[str, Any]]) -> None:
    devices["/dev/input/event7"] = {}
    await collect(source(grab=False))
    assert not FakeDevice.opened[0].grabbed


async def test_a_name_is_the_node_with_a_wanted_key(devices: dict[str, dict[str, Any]]) -> None:
    devices["/dev/input/event3"] = {"name": "Pad", "keys": (ecodes.KEY_VOLUMEUP,)}  # its consumer-control node
    devices["/dev/input/event4"] = {"name": "Other", "keys": (ecodes.KEY_KP5,)}
    devices["/dev/input/event5"] = {"name": "Pad", "keys": (ecodes.KEY_KP5, ecodes.KEY_KP1)}
    await collect(source(device="Pad", keys={ecodes.KEY_KP1}))
    read = [d for d in FakeDevice.opened if d.grabbed]
    assert [d.path for d in read] == ["/dev/input/event5"]
    assert all(d.closed for d in FakeDevice.opened)  # the nodes looked at are closed too


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.EBUSY, "another program has grabbed it"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.ENOTTY, "not an input event device"),
        (errno.EIO, "busy"),  # no hint: the error's own words
    ],
)
async def test_what_waiting_will_not_fix_is_the_callers_error(
    devices: dict[str, dict[str, Any]], code: int, hint: str
) -> None:
    devices["/dev/input/event7"] = {"grab_errno": code}
    with pytest.raises(GadgetError, match=f"^gadget /dev/input/event7: .*{hint}") as exc:
        await collect(source())
    assert exc.value.device == "/dev/input/event7"
    assert FakeDevice.opened[0].closed  # a failed grab does not leak the open device


async def test_an_outage_resets_counts_logs_once_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    sim = SimulatedDevice(100)
    sim.put(ev(ecodes.KEY_A))
    sim.unplug()
    sim.put(ev(ecodes.KEY_B))
    sim.close()
    attempts, gone = 0, []

    def reopen() -> AsyncIterator[InputEvent]:
        nonlocal attempts
        attempts += 1
        if attempts in (2, 3):  # the node is not back yet
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return sim.events()

    src = source(source=reopen, on_gone=lambda: gone.append(1))
    with caplog.at_level(logging.INFO, logger=log.name):
        assert [e.code for e in await collect(src)] == [ecodes.KEY_A, ecodes.KEY_B]
    assert (attempts, len(gone), src.outages) == (4, 3, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "is gone" in m] == [
        "gadget /dev/input/event7 is gone (No such device); reopening until it is back"
    ]
    assert any(m.startswith("gadget /dev/input/event7 back after") for m in messages)
    assert messages[-1] == "gadget /dev/input/event7: the event source ended"


async def test_the_backoff_doubles_up_to_its_cap_with_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setattr(evdev_source.asyncio, "sleep", sleep)
    monkeypatch.setattr(evdev_source.random, "uniform", lambda a, b: b)
    attempts = 0

    def reopen() -> AsyncIterator[InputEvent]:
        nonlocal attempts
        attempts += 1
        if attempts <= 6:
            raise OSError(errno.ENODEV, "No such device")
        sim = SimulatedDevice(1)
        sim.close()
        return sim.events()

    src = source(source=reopen, reopen_initial_s=0.5, reopen_max_s=4.0)
    assert await collect(src) == []
    assert slept == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert src.outages == 1


def test_a_backoff_that_shrinks_is_refused() -> None:
    with pytest.raises(ValueError, match="reopen_max_s"):
        source(reopen_initial_s=2.0, reopen_max_s=1.0)


async def test_a_bare_iterator_is_left_open_for_its_owner() -> None:
    closed = []

    async def gen() -> AsyncGenerator[InputEvent, None]:
        try:
            yield ev(ecodes.KEY_A)
            yield ev(ecodes.KEY_B)
        finally:
            closed.append(1)

    bare = gen()
    src = source(source=bare)
    async with aclosing(src.events()) as events:
        async for _ in events:
            break
    assert not closed  # the caller's to close
    await bare.aclose()
    assert closed
