"""The agent refuses to emit what the centre would refuse: the error is raised at the call site, nothing reaches
the outbox, no seq is used up, and the agent goes on emitting (issue 16).

Against a real Mosquitto and consumer, so "nothing was sent" is checked where it matters: in the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import dead_letters, events
from protocol.commands import ConfigReport
from protocol.envelope import MAX_EVENT_BYTES
from protocol.events import ContractError, RatingPadState
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.procs import stored_seqs, wait_for


def config(tmp_path: Path, port: int) -> AgentConfig:
    return AgentConfig(
        site="qp",
        device="kiosk-1",
        heartbeat_s=3600,  # no heartbeat inside the test: only what the test emits travels
        mqtt=MqttConfig(host="127.0.0.1", port=port),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        clock_sync_file=Path("/"),
    )


def oversized_report() -> ConfigReport:
    """Valid field by field (50 errors of 500 characters each), yet ~26 KB on the wire: past MAX_EVENT_BYTES."""
    return ConfigReport(version=7, errors=["参数错误" * 125] * 50)


async def test_an_oversized_event_raises_contract_error_at_emit_and_nothing_reaches_the_outbox(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN a running agent WHEN a role emits an event larger than the centre takes THEN emit raises
    ContractError naming the type and size, the outbox holds nothing new, no seq is used, and the next valid
    event is stored with the very next seq (no gap the centre would wait for)."""
    agent: Agent = running(config(tmp_path, mosquitto.port))
    await wait_for(lambda: agent.link.is_up(), 10, "the agent to connect")
    await wait_for(lambda: agent.outbox.depth == 0, 10, "the birth's events to be confirmed")
    seq_before, depth_before = agent.outbox.next_seq, agent.outbox.depth

    with pytest.raises(ContractError, match=rf"config\.rejected event of \d+ bytes > {MAX_EVENT_BYTES}"):
        await agent.emit("config.rejected", oversized_report())

    assert (agent.outbox.next_seq, agent.outbox.depth) == (seq_before, depth_before), "the refusal reached the outbox"
    good = await agent.emit("rating.pad_state", RatingPadState(window="A01", state="idle"))
    assert good.seq == seq_before

    await wait_for(lambda: agent.outbox.depth == 0, 10, "the valid event to be stored and confirmed")
    assert seq_before in await stored_seqs(consumer.store, "qp", "kiosk-1")
    rejected = await consumer.store.scalar(
        sa.select(sa.func.count()).select_from(events).where(events.c.type == "config.rejected")
    )
    assert rejected == 0
    assert await consumer.store.scalar(sa.select(sa.func.count()).select_from(dead_letters)) == 0
