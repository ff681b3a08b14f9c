"""The agent's Prometheus metrics (``metrics_port``): what an operator scrapes from a terminal or kiosk to see
whether it keeps up: the outbox's depth and drops, the broker link, its sequence number and uptime."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.config import AgentConfig
from runtime.listen import serve_metrics


class _Outbox(Protocol):
    @property
    def depth(self) -> int: ...

    @property
    def dropped(self) -> int: ...


class _Link(Protocol):
    @property
    def connects(self) -> int: ...

    def is_up(self) -> bool: ...


class Scraped(Protocol):
    """What the metrics read of the agent."""

    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def outbox(self) -> _Outbox: ...

    @property
    def link(self) -> _Link: ...


class AgentCollector(Collector):
    def __init__(self, agent: Scraped) -> None:
        self.agent = agent
        self.started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        a = self.agent
        labels = [a.cfg.site, a.cfg.device, a.cfg.role]
        names = ["site", "device", "role"]
        for family, value in (
            (GaugeMetricFamily("hallfleet_agent_outbox_depth", "Events waiting in the outbox", labels=names),
             a.outbox.depth),
            (CounterMetricFamily("hallfleet_agent_outbox_dropped", "Telemetry dropped (oldest first)", labels=names),
             a.outbox.dropped),
            (GaugeMetricFamily("hallfleet_agent_connected", "1 while the broker link is up", labels=names),
             int(a.link.is_up())),
            (CounterMetricFamily("hallfleet_agent_connects", "Broker connections made", labels=names),
             a.link.connects),
            (GaugeMetricFamily("hallfleet_agent_uptime_seconds", "Since the agent started", labels=names),
             time.monotonic() - self.started),
        ):  # fmt: skip
            family.add_metric(labels, value)
            yield family


def serve_agent_metrics(agent: Scraped, port: int, addr: str = "127.0.0.1") -> Any:
    """prometheus_client's own HTTP thread on addr:port; returns (server, thread). A port already held is a
    one-line ConfigError naming metrics_port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return serve_metrics(registry, port, addr)
