"""Shared fixtures: private Mosquitto and PostgreSQL processes, and store URLs for both backends.

Nothing here skips: a missing binary is an error that says to run scripts/setup, because a test
run that quietly skips the real broker or database proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.agent import Agent
from agent.config import AgentConfig
from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from runtime.settings import MqttConfig
from tests.support.http_receiver import HttpServer
from tests.support.postgres import LocalPostgres
from tests.support.procs import Proc


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A started private broker; tests may kill(), stop() and restart() it."""
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """One cluster for the whole session: starting it costs about a second."""
    server = LocalPostgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _database_name(request: pytest.FixtureRequest) -> str:
    # Readable (which test made it) and unique (parametrized and repeated tests share names).
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_url(postgres_server: LocalPostgres, request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL of a fresh, empty database for this test only.

    Not dropped afterwards: a test that leaked a connection would make DROP fail, and the whole
    cluster is thrown away at the end of the session anyway.
    """
    return postgres_server.create_database(_database_name(request))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same store test against both backends; resolved lazily so SQLite runs never start PostgreSQL."""
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def http() -> Iterator[HttpServer]:
    """A real HTTP receiver standing for webhooks and group robots (tests/support/http_receiver.py)."""
    server = HttpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Agent | AgentConfig], Agent]]:
    """Start in-process agents (from an Agent or its config); every one is stopped afterwards."""
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []

    def start(agent_or_cfg: Agent | AgentConfig) -> Agent:
        agent = agent_or_cfg if isinstance(agent_or_cfg, Agent) else Agent(agent_or_cfg)
        agents.append(agent)
        tasks.append(asyncio.create_task(agent.run()))
        return agent

    yield start
    for a in agents:
        a.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Agent and consumer processes a test starts; whatever is still running afterwards is killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.cleanup()


@dataclass
class RunningConsumer:
    consumer: Consumer
    store: Store
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_consumer(
    mosquitto: LocalMosquitto, store_url: str, ingest: IngestConfig | None = None
) -> AsyncIterator[RunningConsumer]:
    """An in-process consumer on the private broker (a fast presence sweep unless ``ingest`` says otherwise),
    started until ready and stopped after."""
    store = await Store.open(store_url)
    cfg = ConsumerConfig(
        instance="test",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        store=StoreConfig(url=store_url),
        ingest=ingest or IngestConfig(sweep_s=0.1, republish_s=1.0),
    )
    c = Consumer(cfg, store)
    task = asyncio.create_task(c.run())
    await asyncio.wait_for(c.ready.wait(), 10)
    try:
        yield RunningConsumer(c, store, task)
    finally:
        c.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


@pytest.fixture
async def consumer(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[RunningConsumer]:
    async with running_consumer(mosquitto, store_url) as running:
        yield running
