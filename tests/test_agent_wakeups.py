"""Nothing in an idle agent polls: the outbox pump sleeps until a commit, the update watch until an update.

Against a real Mosquitto and consumer; what is counted is the work an idle agent does (outbox queries,
state-directory reads), not wall time, so a busy machine cannot make these pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from agent.agent import Agent
from agent.commands.update import UpdateWatch, state_dir
from agent.config import AgentConfig, OutboxConfig
from agent.updater import LAST_RESULT, REQUEST, RESULT, Request, write_json
from broker.mosquitto.local import LocalMosquitto
from protocol.events import HEALTH_TYPE
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.procs import wait_for

CMD = "0190a5c2-7d1e-7c3a-9b2f-3c4d5e6f7a8b"


def config(tmp_path: Path, port: int, **top: Any) -> AgentConfig:
    return AgentConfig(
        site="qp",
        device="att-1",
        heartbeat_s=3600,  # no heartbeat inside the test: the agent is idle
        mqtt=MqttConfig(host="127.0.0.1", port=port),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        clock_sync_file=Path("/"),
        **top,
    )


def count_fetches(agent: Agent) -> list[float]:
    calls: list[float] = []
    real = agent.outbox.fetch

    async def counting(after_seq: int, limit: int) -> Any:
        calls.append(time.monotonic())
        return await real(after_seq, limit)

    agent.outbox.fetch = counting  # type: ignore[method-assign]
    return calls


async def settled(agent: Agent) -> None:
    """Connected, the birth's first heartbeat sent and confirmed: nothing left to do."""
    await wait_for(lambda: agent.link.is_up(), 10, "the agent to connect")
    await wait_for(lambda: agent.outbox.depth == 0, 10, "the outbox to drain")


async def test_an_idle_pump_never_queries_the_outbox_and_wakes_on_an_emit(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(config(tmp_path, mosquitto.port))
    await settled(agent)
    fetches = count_fetches(agent)
    sleeps = agent.link.idle_waits

    await asyncio.sleep(2.5)  # the old pump asked the outbox every second

    assert fetches == [], "the idle pump queried the outbox"
    assert agent.link.idle_waits == sleeps, "the idle pump woke up"

    t0 = time.monotonic()
    await agent.emit(HEALTH_TYPE, agent.health())
    await wait_for(lambda: agent.outbox.depth == 0, 10, "the event to be sent and confirmed")
    assert fetches and fetches[0] - t0 < 0.5, "the commit woke the pump at once"
    assert len(fetches) == 1, "one event, one query: a page shorter than asked for was all there was"


async def test_one_waiting_event_is_committed_at_once_whatever_the_group_commit_window(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """A lone event (a command's ack) never waits for a batch: with a 1 s window for contending producers,
    one producer's emits each take an fsync, not the window (the old committer slept it every time)."""
    cfg = config(tmp_path, mosquitto.port)
    cfg = cfg.model_copy(update={"outbox": OutboxConfig(path=tmp_path / "outbox.db", commit_interval_ms=1000)})
    agent: Agent = running(cfg)
    await settled(agent)
    loop = asyncio.get_running_loop()
    took = []
    for _ in range(5):
        t0 = loop.time()
        await agent.emit(HEALTH_TYPE, agent.health())
        took.append(loop.time() - t0)
    assert max(took) < 0.5, f"emits took {', '.join(f'{t * 1000:.0f}' for t in took)} ms"


async def test_the_update_watch_reads_nothing_while_no_update_runs(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    agent: Agent = running(config(tmp_path, mosquitto.port))
    await settled(agent)
    looks = agent.update_watch.looks

    await asyncio.sleep(1.5)  # the old watch read the request file every 0.5 s

    assert agent.update_watch.looks == looks == 1, "one look at start, none while idle"


class _Link:
    def __init__(self) -> None:
        self.session = 7
        self.up = asyncio.Event()
        self.up.set()

    def is_up(self) -> bool:
        return self.up.is_set()

    async def wait_session(self, after: int) -> int:
        if self.session <= after:
            await asyncio.Event().wait()  # no new session in this test
        return self.session


class _Host:
    """Only what the update watch reads: the config (its state dir), the link, the device's state and emit."""

    def __init__(self, cfg: AgentConfig, agent: Agent) -> None:
        self.cfg = cfg
        self.ctx = agent.ctx
        self.link = _Link()


async def test_during_an_update_the_watch_wakes_on_the_result_file_not_a_timer(tmp_path: Path) -> None:
    """GIVEN a pending update request WHEN the updater writes result.json THEN the watch answers at once
    (inotify), and it has written health.json for the connected session."""
    cfg = config(tmp_path, 1)
    agent = Agent(cfg)
    host = _Host(cfg, agent)
    state = state_dir(cfg)
    state.mkdir(parents=True)
    async with agent.outbox:
        await agent.state.prepare()
        await agent.state.set_command_state(CMD, "update", "updating")
        req = Request(
            command_id=CMD, from_version="1.0", to_version="1.1", store="/w", health_timeout_s=600,
            root=str(tmp_path), state_dir=str(state), previous=str(tmp_path), restart_command=["true"],
            shared_site_packages=None, install_timeout_s=60, keep_versions=3,
        )  # fmt: skip
        req.save(state / REQUEST)
        watch = UpdateWatch(host)  # type: ignore[arg-type]
        task = asyncio.create_task(watch.run())
        try:
            await wait_for(lambda: (state / "health.json").exists(), 5, "health.json for the updater")
            assert json.loads((state / "health.json").read_text())["session"] == 7
            looks = watch.looks
            await asyncio.sleep(1.2)
            assert watch.looks == looks, "waiting for the updater, the watch did not look again"

            t0 = time.monotonic()
            write_json(state / RESULT, {"command_id": CMD, "outcome": "updated", "reason": ""})
            await wait_for(lambda: not (state / REQUEST).exists(), 5, "the watch to answer the result")
            assert time.monotonic() - t0 < 1.0
            assert (state / LAST_RESULT).exists()
            assert await agent.state.command_state(CMD) == "succeeded"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
