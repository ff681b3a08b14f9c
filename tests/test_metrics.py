"""Prometheus metrics of the agent and the consumer, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from broker.mosquitto.local import LocalMosquitto
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.procs import Proc, wait_for, write_toml


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def value(text: str, name: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(name + "{") or ln.startswith(name + " ")]
    assert lines, f"{name} not in the scrape"
    return float(lines[0].rsplit(" ", 1)[1])


async def test_the_agent_exposes_its_outbox_and_link(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    port = free_port()
    cfg = AgentConfig(
        site="qp",
        device="att-1",
        heartbeat_s=0.5,
        metrics_port=port,
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        clock_sync_file=Path("/"),
    )
    agent: Agent = running(cfg)
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the agent to connect")
    text = scrape(port)
    assert value(text, "hallfleet_agent_connected") == 1
    assert 'site="qp"' in text and 'device="att-1"' in text
    assert value(text, "hallfleet_agent_outbox_dropped_total") == 0
    mosquitto.kill()
    await wait_for(lambda: not agent.link.connected.is_set(), 10, "the agent to notice")
    await wait_for(lambda: value(scrape(port), "hallfleet_agent_outbox_depth") >= 2, 10, "heartbeats to queue up")
    assert value(scrape(port), "hallfleet_agent_connected") == 0


async def test_the_consumer_exposes_ingest_counters_when_configured(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    port = free_port()
    cfg = write_toml(
        tmp_path / "consumer.toml",
        {"instance": "m1", "metrics_port": port},
        {
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"},
        },
    )
    proc = Proc("consumer-m1", ["consumer", "--config", str(cfg)], tmp_path)
    proc.start()
    try:

        def up() -> bool:
            try:
                return "hallfleet_consumer_received_total" in scrape(port)
            except OSError:
                return False

        await wait_for(up, 20, "the consumer's metrics endpoint")
        text = scrape(port)
        for name in (
            "hallfleet_consumer_stored_total",
            "hallfleet_consumer_uncommitted",
            "hallfleet_notifications_failures_total",
        ):
            assert name in text, name
        # The job label values are what dashboards and alert rules select on: renaming a job breaks them.
        jobs = ("presence-sweep", "sla-clock", "attendance", "ratings", "duties", "queueing", "deliveries")
        failures = [f'hallfleet_consumer_job_failures_total{{job="{job}"}} 0.0' for job in jobs]
        await wait_for(lambda: set(failures) <= set(scrape(port).splitlines()), 20, "the jobs' failure counters")
    finally:
        proc.cleanup()
