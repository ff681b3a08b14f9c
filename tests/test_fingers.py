"""hallfleet/fingers.py: the demo's and the fleet's way of enrolling a finger at a terminal's twin. The command runs
in-process on a running agent (real Mosquitto), and the finger is pressed when the screen asks, not after a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.attendance import AttendanceConfig, AttendanceRole, Feedback
from broker.mosquitto.local import LocalMosquitto
from hallfleet.fingers import FIRST_PRESS, CannotEnrol, enrol_on_twin
from runtime.settings import MqttConfig
from tests.support.procs import wait_for


def device(mosquitto: LocalMosquitto, tmp_path: Path, role: str, **sections: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "site": "qp",
            "device": "att-1",
            "role": role,
            "heartbeat_s": 60,
            "mqtt": MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=0.5),
            "outbox": OutboxConfig(path=tmp_path / "att-1.db"),
            "clock_sync_file": Path("/"),
            **sections,
        }
    )


def terminal(mosquitto: LocalMosquitto, tmp_path: Path, attendance: dict[str, object]) -> AgentConfig:
    return device(mosquitto, tmp_path, "attendance", attendance=AttendanceConfig.model_validate(attendance))


async def started(running: Callable[[AgentConfig], Agent], cfg: AgentConfig) -> tuple[Agent, AttendanceRole]:
    agent = running(cfg)
    await asyncio.wait_for(agent.started.wait(), 10)
    assert agent.attendance is not None
    return agent, agent.attendance


async def test_people_enrolled_one_after_another_each_get_their_page_and_then_punch(
    mosquitto: LocalMosquitto, tmp_path: Path, running: Callable[[AgentConfig], Agent]
) -> None:
    """GIVEN a fingerprint terminal whose finger loop scans all the time WHEN five people are enrolled in a row
    THEN each acked page holds that person's finger in the twin's library, the press came after the screen's ask,
    and the finger then punches as that person."""
    cfg = terminal(mosquitto, tmp_path, {"fingerprint": {"type": "sim"}, "fingerprint_poll_s": 0.01, "repeat_s": 0})
    agent, role = await started(running, cfg)
    sim = role.finger_sim
    assert sim is not None
    for i in range(5):
        staff, finger = f"S{i:04d}", f"p{i}-right-index"
        page = await enrol_on_twin(agent, staff, finger, timeout_s=10)
        assert sim.library[page] == finger
        assert role._fingers[page] == staff
        punched = role.output.expect(lambda fb, s=staff: fb.ok and fb.staff_id == s)  # type: ignore[misc]
        sim.press(finger, 1)
        await asyncio.wait_for(punched, 10)
    asks = [fb for fb in role.output.shown if isinstance(fb, Feedback) and fb.text == FIRST_PRESS]
    assert len(asks) == 5


async def test_a_device_without_a_fingerprint_twin_cannot_enrol(
    mosquitto: LocalMosquitto, tmp_path: Path, running: Callable[[AgentConfig], Agent]
) -> None:
    agent = running(device(mosquitto, tmp_path, "sim", sim={"events": 0}))
    await asyncio.wait_for(agent.started.wait(), 10)
    with pytest.raises(CannotEnrol, match="qp/att-1 has no fingerprint twin"):
        await enrol_on_twin(agent, "S0001", "s1-right-index")


async def test_an_enrolment_nobody_presses_for_is_cancelled_and_leaves_no_page(
    mosquitto: LocalMosquitto, tmp_path: Path, running: Callable[[AgentConfig], Agent]
) -> None:
    """GIVEN an enrolment whose ask is answered by nobody WHEN the caller stops waiting (timeout_s) THEN the
    command is cancelled and awaited: the twin's library and the mapping stay empty."""
    cfg = terminal(mosquitto, tmp_path, {"fingerprint": {"type": "sim"}, "fingerprint_poll_s": 0.01})
    agent, role = await started(running, cfg)
    assert role.finger_sim is not None
    role.finger_sim.press = lambda finger, times=2: None  # type: ignore[method-assign]  # nobody puts a finger on
    with pytest.raises(TimeoutError):
        await enrol_on_twin(agent, "S0001", "s1-right-index", timeout_s=0.5)
    await wait_for(lambda: not role._fingers, 5, "the mapping to stay empty")
    assert role.finger_sim.library == {}
