"""The rest of the hall in the fleet (issue 23): queue devices on a queue-system twin, the 24-hour area's doors and
lockers, the duty officers' patrol handhelds; the kiosks' daily network check is their agent config's.

The rule: each queue step is reported once. In each simulator process, every hall whose queue devices this slice
holds gets its own queue-system twin (drivers/queue/sim.py, a real HTTP server); of those devices the first is the
twin's ticket dispenser (every ticket printed) and the others its call displays, the windows split between them
(a display with none left shows one another shows too);
a hall with one queue device in the slice has it as the queue PC's agent (every step). Two processes' twins of one
hall never issue the same number: a process's tickets carry its letter after the service's (A017, AB017 ...).
The windows of this slice in that hall then serve those tickets, and their pads rate the same ticket numbers.

Doors, lockers and patrols play the demo's script (hallfleet/demo_hall.HallPlay) on the fleet's clock; a device
that loses power under it is played on with the agent that replaced it.
"""

from __future__ import annotations

import logging
import string
from typing import Any

from agent.agent import Agent
from agent.netcheck import Endpoint, NetCheckConfig
from agent.roles.queue import QueueRoleConfig
from hallfleet import demo_hall as hd
from runtime.settings import MqttConfig

log = logging.getLogger(__name__)


def ticket_prefixes(shard: int) -> dict[str, str]:
    """Service code -> ticket prefix of this process's twins (shard 0: the demo's own, A/B/C)."""
    if shard == 0:
        return dict(hd.SERVICES)
    letters = string.ascii_uppercase
    mark = letters[shard % 26] if shard < 26 else letters[shard // 26 % 26] + letters[shard % 26]
    return {code: prefix + mark for code, prefix in hd.SERVICES.items()}


def queue_sections(devices: list[str], windows: list[str], url: str) -> dict[str, QueueRoleConfig]:
    """Each queue device's section (see the module's rule), by device name, for one hall's twin at ``url``."""
    driver = {"type": "http", "url": url}
    if len(devices) == 1:
        return {devices[0]: QueueRoleConfig.model_validate({"kind": "server", "driver": driver, "poll_s": 1})}
    first, displays = devices[0], devices[1:]
    out = {first: QueueRoleConfig.model_validate({"kind": "dispenser", "name": "*", "driver": driver, "poll_s": 1})}
    for k, name in enumerate(displays):
        # More displays than windows: a spare one shows a window another shows too (the centre folds a step
        # reported twice as one, as when two screens of a real hall show the same window).
        mine = windows[k :: len(displays)] or ([windows[k % len(windows)]] if windows else [])
        section = {"kind": "display", "windows": mine, "driver": driver, "poll_s": 1}
        out[name] = QueueRoleConfig.model_validate(section)
    return out


def netcheck(mqtt: MqttConfig, daily_at: str) -> NetCheckConfig:
    """The kiosks' daily check: the broker stands in for the hall's gateway, localhost for a name to resolve; the
    centre is the agent's own MQTT link; no extranet endpoint (a simulated hall has none)."""
    return NetCheckConfig(daily_at=daily_at, gateway=Endpoint(host=mqtt.host, port=mqtt.port), dns_name="localhost")


async def play(script: hd.HallPlay, role: str, agent: Agent, points: list[str], rounds: list[Any]) -> None:
    """One hall device's day, as the demo plays it."""
    if role == "door":
        await script.door(agent)
    elif role == "locker":
        await script.lockers(agent)
    elif role == "patrol":
        await script.patrol(agent, rounds, points)


def sim_of(agent: Agent | None, role: str) -> Any:
    """The door controller's or locker board's twin, once its role made it (None before, or for other roles)."""
    section = getattr(agent, role, None) if agent is not None and role in ("door", "locker", "patrol") else None
    return getattr(section, "sim", None)
