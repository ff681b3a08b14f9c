"""Prometheus metrics. The API's /metrics counts the fleet from the store at each scrape (devices by presence,
open incidents by severity, notifications failed or pending, dead letters), so every API instance answers the
same and nothing is kept in memory, but for the logins this process refused (its throttle is its own).
``serve_consumer_metrics`` is for the consumer: its own ingest counters on a port of its own (``metrics_port``
in the consumer's config)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.api import queries
from broker.api.throttle import LoginThrottle
from broker.store.db import Store
from runtime.listen import serve_metrics

if TYPE_CHECKING:
    from broker.consumer import Consumer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def fleet_metrics(store: Store, throttle: LoginThrottle | None = None) -> bytes:
    counts = await queries.fleet_counts(store)
    devices = GaugeMetricFamily("hallfleet_devices", "Devices by site and presence", labels=["site", "presence"])
    for site, presence, n in counts["devices"]:
        devices.add_metric([site, presence], n)
    incidents = GaugeMetricFamily(
        "hallfleet_incidents_open", "Incidents not closed, by site and severity", labels=["site", "severity"]
    )
    for site, severity, n in counts["incidents"]:
        incidents.add_metric([site, severity], n)
    notes = GaugeMetricFamily("hallfleet_notifications", "Notifications not delivered", labels=["state"])
    by_state = {state: n for state, n in counts["notifications"]}
    for state in ("pending", "failed"):  # always both: an alert rule on failed needs the series to exist at 0
        notes.add_metric([state], by_state.get(state, 0))
    dead = GaugeMetricFamily(
        "hallfleet_dead_letters", "Messages the consumer could not store, by reason", labels=["reason"]
    )
    for reason, n in counts["dead_letters"]:
        dead.add_metric([reason], n)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([devices, incidents, notes, dead, *([] if throttle is None else [_refused(throttle)])]))
    return generate_latest(registry)


def _refused(throttle: LoginThrottle) -> Metric:
    # An attack shows here before anyone reads the audit log: busy means the failure tables are full.
    refused = CounterMetricFamily(
        "hallfleet_api_login_refused", "Logins this API process refused unverified, by why", labels=["why"]
    )
    for why, n in throttle.refused.items():
        refused.add_metric([why], n)
    return refused


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


class ConsumerCollector(Collector):
    """The consumer's in-memory counters (broker/ingest/counters.py) and its jobs' failures, read at each scrape."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def collect(self) -> Iterable[Metric]:
        c: Any = self.consumer.counters
        for name, help_ in (
            ("received", "MQTT messages received"),
            ("stored", "Events committed to the store"),
            ("dead", "Messages sent to dead_letters"),
            ("statuses", "Status (presence) messages"),
            ("batches", "Batches committed"),
            ("store_errors", "Writes that failed because the store was unavailable (retried)"),
            ("store_rejected", "Messages the store refused, kept in dead_letters as store_rejected"),
        ):
            m = CounterMetricFamily(f"hallfleet_consumer_{name}", help_)
            m.add_metric([], getattr(c, name))
            yield m
        dropped = GaugeMetricFamily("hallfleet_broker_dropped", "Messages Mosquitto reports it dropped ($SYS)")
        dropped.add_metric([], c.broker_dropped)
        yield dropped
        waiting_for_store = GaugeMetricFamily(
            "hallfleet_consumer_store_unavailable", "1 while ingest waits for an unavailable store (nothing acked)"
        )
        waiting_for_store.add_metric([], 0 if c.store_unavailable_since is None else 1)
        yield waiting_for_store
        largest = GaugeMetricFamily("hallfleet_consumer_largest_batch", "Largest batch committed")
        largest.add_metric([], c.largest_batch)
        yield largest
        waiting = GaugeMetricFamily("hallfleet_consumer_uncommitted", "Messages received, not yet committed (lag)")
        waiting.add_metric([], self.consumer.uncommitted)
        yield waiting
        job_failures = CounterMetricFamily(
            "hallfleet_consumer_job_failures", "Failed runs of a background job (each retried)", labels=["job"]
        )
        for name, stats in self.consumer.jobs.stats.items():
            job_failures.add_metric([name], stats.failures)
        yield job_failures
        deliverer = self.consumer.deliverer
        if deliverer is not None:
            for name, value, help_ in (
                ("sent", deliverer.sent, "Notifications delivered"),
                ("failures", deliverer.failures, "Notification deliveries that failed (each is retried or kept)"),
            ):
                m = CounterMetricFamily(f"hallfleet_notifications_{name}", help_)
                m.add_metric([], value)
                yield m


def consumer_registry(consumer: Consumer) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerCollector(consumer))
    return registry


def serve_consumer_metrics(consumer: Consumer, port: int, addr: str = "127.0.0.1") -> Any:
    """Expose the consumer's ingest counters on ``http://addr:port/metrics`` (prometheus_client's own thread);
    returns (server, thread) so the caller can shut it down. A port already held is a one-line ConfigError naming
    metrics_port."""
    return serve_metrics(consumer_registry(consumer), port, addr)
