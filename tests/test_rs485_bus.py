"""The RS-485 bus (drivers/rs485) in a process holding many descriptors, as the fleet simulator does."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import pytest

from drivers.door.controller import DoorController, SerialDoorControllerConfig
from drivers.door.sim import SimulatedDoorController
from drivers.rs485.port import SerialPortConfig

PAST_SELECT = 1100  # select() refuses any descriptor at or past FD_SETSIZE, 1024


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This process holds descriptors past 1024, so the twin's pty and the port the driver opens land there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < PAST_SELECT + 64:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} is below what this test needs ({PAST_SELECT + 64})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, PAST_SELECT + 64), hard))
    fds: list[int] = []
    try:
        while not fds or fds[-1] < PAST_SELECT:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("many_descriptors")
def test_a_door_controller_answers_when_its_port_is_past_descriptor_1024() -> None:
    """GIVEN a process whose next descriptors are past 1024 (a simulator with a thousand agents' connections)
    WHEN a door controller's twin opens its pty and the driver reads its status THEN both sides work: select()
    would refuse those descriptors, and the twin's thread and every status read died with ValueError."""
    twin = SimulatedDoorController(doors=1)
    try:
        controller = DoorController(SerialDoorControllerConfig(port=SerialPortConfig(path=twin.path), doors=["main"]))
        twin.open_door()
        first = controller.status()
        twin.shut_door()
        second = controller.status()
    finally:
        twin.close()
    assert [r.open for r in first] == [True]
    assert [r.open for r in second] == [False]
