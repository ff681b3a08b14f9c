"""What the batch stage sends at once (broker/ingest/batch.py): a command's answer is stored without waiting for
the batch window, which a plain event waits out (issue 20: a `diagnose` round trip spent most of its time in
the consumer's 20 ms window). A real consumer on a real Mosquitto, its window widened so the difference shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from broker.config import IngestConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store import commands as cmd_sql
from broker.store.db import Store
from broker.store.schema import commands, events
from protocol import topics
from protocol.commands import Command, CommandAck, CommandState
from tests.conftest import running_consumer
from tests.support.mqtt import publish
from tests.test_store_errors import envelope, punch_msg

WINDOW_MS = 4000  # far beyond what an urgent item may take here, even on a loaded machine


@pytest.fixture
async def slow_window(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[Store]:
    async with running_consumer(mosquitto, store_url, IngestConfig(batch_wait_ms=WINDOW_MS)) as running:
        yield running.store


async def _until(check: sa.Select[tuple[int]], store: Store, within_s: float) -> float | None:
    """Seconds until ``check`` counts a row, or None if it did not within ``within_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        if int(await store.scalar(check) or 0):
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    return None


async def test_a_commands_answer_is_stored_at_once_and_a_plain_event_waits_for_the_window(
    mosquitto: LocalMosquitto, slow_window: Store
) -> None:
    store = slow_window
    now = datetime.now(UTC)
    cmd = Command(id="01a24fd5-0000-7000-8000-00000000c0de", name="diagnose", issuer="it.chen", issued_at=now,
                  expires_at=now + timedelta(hours=1))  # fmt: skip
    async with store.engine.begin() as conn:
        await cmd_sql.insert_command(conn, "qp/kiosk-9", cmd)
    publish(mosquitto.port, [punch_msg("att-1", 1)])
    ack = CommandAck(command_id=cmd.id, name=cmd.name, state=CommandState.SUCCEEDED, result={"ok": True})
    env = envelope("kiosk-9", 1, "command.ack", ack.model_dump(mode="json"))
    publish(mosquitto.port, [(topics.cmd_ack("qp", "kiosk-9"), env.model_dump_json().encode(), False)])
    answered = sa.select(sa.func.count()).select_from(commands).where(commands.c.state == "succeeded")
    took = await _until(answered, store, WINDOW_MS / 1000 / 2)
    assert took is not None, "the command's answer waited for the batch window"
    # The punch went with the answer's batch; one alone afterwards waits out the window, and so does a command's
    # `running`: only the final answer is what somebody waits for (it takes the steps before it along).
    running = CommandAck(command_id=cmd.id, name=cmd.name, state=CommandState.RUNNING)
    env = envelope("kiosk-9", 2, "command.ack", running.model_dump(mode="json"))
    publish(
        mosquitto.port,
        [punch_msg("att-1", 2), (topics.cmd_ack("qp", "kiosk-9"), env.model_dump_json().encode(), False)],
    )
    second = sa.select(sa.func.count()).select_from(events).where(events.c.seq == 2, events.c.device == "att-1")
    assert await _until(second, store, 1.0) is None, "a plain event did not wait for the window"
    assert await _until(second, store, WINDOW_MS / 1000 + 5) is not None
