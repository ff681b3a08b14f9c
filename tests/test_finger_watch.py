"""Pin the finger watch (drivers/fingerprint/watch.py): an idle sensor is asked only GenImg, in the watch's one
thread; a finger found is reported with the image it took (the scan reads that image, no second capture); a reader
busy with another call is skipped, not waited for; the reader's errors reach the waiting coroutine; the thread
ends when nothing is watched. The readers run the real pyusb path against the simulated module."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from drivers.fingerprint import FingerDisconnected, FingerNotFound, NoMatch, ZfmConfig, ZfmReader
from drivers.fingerprint.protocol import Instruction
from drivers.fingerprint.sim import PRODUCT_ID, VENDOR_ID, SimulatedZfm
from drivers.fingerprint.watch import FingerWatch
from tests.support.procs import wait_for


def make_reader(sim: SimulatedZfm) -> ZfmReader:
    return ZfmReader(ZfmConfig(vendor_id=VENDOR_ID, product_id=PRODUCT_ID), backend=sim)


@pytest.fixture
def sim() -> SimulatedZfm:
    return SimulatedZfm()


@pytest.fixture
def reader(sim: SimulatedZfm) -> Iterator[ZfmReader]:
    r = make_reader(sim)
    yield r
    r.close()


def commands_after_open(sim: SimulatedZfm) -> list[Instruction | int]:
    return sim.commands[2:]  # VfyPwd, ReadSysPara: the handshake


async def test_an_idle_sensor_is_asked_only_genimg_about_once_per_poll(sim: SimulatedZfm, reader: ZfmReader) -> None:
    """GIVEN a watched sensor nobody touches WHEN 0.5 s pass at a 0.05 s poll THEN the module was sent GenImg and
    nothing else, about ten times (the first at once), and the waiting coroutine was not woken."""
    watch = FingerWatch()
    started = time.monotonic()
    waiting = asyncio.create_task(watch.press(reader, 0.05))
    await asyncio.sleep(0.5)
    polls = (time.monotonic() - started) / 0.05  # the sleep may overrun on a busy machine

    assert not waiting.done()
    asked = commands_after_open(sim)
    assert set(asked) == {Instruction.GEN_IMG}
    assert 6 <= len(asked) <= polls + 2
    waiting.cancel()


async def test_a_finger_is_reported_within_a_poll_and_scanned_from_the_image_the_watch_took(
    sim: SimulatedZfm, reader: ZfmReader
) -> None:
    """GIVEN a sensor watched at a 0.3 s poll WHEN a finger is placed THEN the press is reported within one poll
    (plus scheduling), as a new press since the sensor was seen empty, and the scan that follows sends no second
    GenImg: it reads the image the watch took (on a real module a capture is the slow step)."""
    watch = FingerWatch()
    waiting = asyncio.create_task(watch.press(reader, 0.3))
    await asyncio.sleep(0.35)  # two empty polls
    placed = time.monotonic()
    sim.place("mallory-right-index")
    new_press = await asyncio.wait_for(waiting, 2)
    took = time.monotonic() - placed

    assert new_press is True
    assert took < 0.5
    before = len(sim.commands)
    assert reader.scan() == NoMatch()
    assert sim.commands[before:] == [Instruction.IMG2TZ, Instruction.SEARCH]
    assert reader.scan() == NoMatch()  # the image was read: the next scan captures anew
    assert sim.commands[-3] == Instruction.GEN_IMG


async def test_a_finger_already_on_the_sensor_is_not_a_new_press(sim: SimulatedZfm, reader: ZfmReader) -> None:
    """GIVEN a finger resting on the sensor WHEN the watch starts THEN it reports it at once, as not a new press
    (the terminal does not answer a refused finger again until it was lifted)."""
    sim.place("mallory-right-index")
    assert await asyncio.wait_for(FingerWatch().press(reader, 0.05), 2) is False


async def test_a_reader_busy_with_another_call_is_skipped_not_waited_for(sim: SimulatedZfm) -> None:
    """GIVEN two readers on one watch, one held by another thread (an enrolment) WHEN a finger is placed on the
    other THEN it is reported at once: the held reader is skipped at its turns, never waited for, and sent
    nothing while held."""
    busy_sim, busy = sim, make_reader(sim)
    free_sim = SimulatedZfm(vendor_id=0x1234, product_id=0x5678)
    free = ZfmReader(ZfmConfig(vendor_id=0x1234, product_id=0x5678), backend=free_sim)
    busy.open()
    held, release = threading.Event(), threading.Event()

    def enrolment() -> None:
        with busy._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=enrolment)
    holder.start()
    held.wait(5)
    watch = FingerWatch()
    try:
        on_busy = asyncio.create_task(watch.press(busy, 0.02))
        on_free = asyncio.create_task(watch.press(free, 0.02))
        await asyncio.sleep(0.1)
        sent = len(busy_sim.commands)
        free_sim.place("zhang-right-index")
        await asyncio.wait_for(on_free, 1)
        assert len(busy_sim.commands) == sent
        assert not on_busy.done()
        on_busy.cancel()
    finally:
        release.set()
        holder.join(5)
        busy.close()
        free.close()


async def test_the_readers_error_reaches_the_waiting_coroutine(sim: SimulatedZfm, reader: ZfmReader) -> None:
    """GIVEN a watched reader WHEN its module is unplugged THEN the waiting coroutine raises the reader's error
    (the terminal reports a device error), and waiting again raises 'not found' until it is plugged back."""
    watch = FingerWatch()
    waiting = asyncio.create_task(watch.press(reader, 0.02))
    await asyncio.sleep(0.1)
    sim.unplug()
    with pytest.raises(FingerDisconnected):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(FingerNotFound):
        await asyncio.wait_for(watch.press(reader, 0.02), 2)


async def test_the_thread_ends_when_nothing_is_watched(sim: SimulatedZfm, reader: ZfmReader) -> None:
    """GIVEN a watch with one waiting coroutine WHEN it is cancelled (the agent stops) THEN the watch's thread ends
    within a poll, and a later wait starts it again."""
    watch = FingerWatch()
    waiting = asyncio.create_task(watch.press(reader, 0.05))
    await asyncio.sleep(0.1)
    assert watch.running
    waiting.cancel()
    await wait_for(lambda: not watch.running, 2, "the watch's thread to end")
    sim.place("zhang-right-index")
    assert await asyncio.wait_for(watch.press(reader, 0.05), 2) is False
