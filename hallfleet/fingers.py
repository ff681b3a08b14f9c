"""A person enrolling a finger at an attendance terminal's twin, as the demo and the fleet simulator do it: the
fingerprint_enrol command runs in this process (the handler the centre's command reaches), and the finger is
pressed on the twin when the terminal's screen asks for it.

The rule: the press waits for the screen's ask, never for a guessed time. Before the ask, the terminal's own scan
holds the reader and would take the press as a punch of nobody; the ask is shown once the enrolment holds it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agent.roles.attendance import Feedback, FingerEnrol, enrol_prompt_zh
from drivers.fingerprint.zfm import EnrolStep

if TYPE_CHECKING:
    from agent.agent import Agent

FIRST_PRESS = enrol_prompt_zh(EnrolStep(1, "press"))
STARTED_S = 60.0  # an agent's start, on a busy machine with many agents starting at once


class CannotEnrol(Exception):
    """The agent has no fingerprint twin or no fingerprint_enrol command (not an attendance terminal with one)."""


def _asks_first_press(fb: Feedback) -> bool:
    return fb.prompt and fb.text == FIRST_PRESS


async def enrol_on_twin(agent: Agent, staff_id: str, finger: str, timeout_s: float = 30.0) -> int:
    """Enrol ``finger`` for ``staff_id``: the page the command acked. Raises what the command raised (library
    full, no press seen in time), TimeoutError past ``timeout_s`` (or an agent not started within STARTED_S),
    CannotEnrol without a twin. Stopped for any
    reason, the command is cancelled and awaited: the role calls its reader thread off and clears the page."""
    # The command runs in this process, so it waits for what the agent's start prepares (its state store: before
    # it, the demo's enrolments failed with 'no such table: kv' and those people punched by QR instead).
    await asyncio.wait_for(agent.started.wait(), STARTED_S)
    role = agent.attendance
    spec = agent.commands.registry.get("fingerprint_enrol")
    if role is None or role.finger_sim is None or spec is None:
        raise CannotEnrol(f"{agent.cfg.site}/{agent.cfg.device} has no fingerprint twin")
    asked = role.output.expect(_asks_first_press)  # taken before the command starts, so no ask is missed
    task: asyncio.Future[Any] = asyncio.ensure_future(spec.handler(FingerEnrol(staff_id=staff_id)))
    try:
        # Whichever comes first: the ask, or the command's refusal before asking (library full).
        await asyncio.wait([asked, task], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if asked.done():
            role.finger_sim.press(finger, 2)
        ack = await asyncio.wait_for(task, timeout_s)
    except BaseException:
        task.cancel()
        await asyncio.wait([task])
        raise
    finally:
        asked.cancel()
    return int(ack["page"])
