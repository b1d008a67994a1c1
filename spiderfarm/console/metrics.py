"""``/metrics``: the latest snapshot in Prometheus's text format, written by
``prometheus_client`` through a collector of our own on a registry of our own (the
global registry is left alone: a process may hold several farms, or other metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .snapshots import View

__all__ = ["BUSIEST_HOSTS", "FarmCollector", "metrics_text"]

#: Hosts whose delay is exported: the busiest (in flight, then queued, then pages).
BUSIEST_HOSTS = 20


class FarmCollector(Collector):
    """Every metric from the one view ``latest()`` returns when Prometheus scrapes."""

    def __init__(self, latest: Callable[[], View]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        view = self._latest()
        status, state = view.status, view.state
        stats = status["stats"]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"spiderfarm_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"spiderfarm_{name}", doc, value=value)

        yield counter("pages", "Pages fetched and parsed.", stats.get("pages", 0))
        yield counter("items", "Items written to the feeds.", stats.get("items", 0))
        yield counter(
            "requests_seen", "Distinct requests the crawl has met (deduplicated).", status["seen"]
        )
        errors = CounterMetricFamily(
            "spiderfarm_errors", "Requests failed for good (kind=failed) and errors counted "
            "on pages (kind=errors), by reason.", labels=["kind", "reason"],
        )  # fmt: skip
        for key, value in state["errors_by_reason"].items():
            kind, _, reason = key.partition("/")
            errors.add_metric([kind, reason], value)
        yield errors
        retries = CounterMetricFamily(
            "spiderfarm_retries", "Retries scheduled, by reason.", labels=["reason"]
        )
        for key, value in sorted(stats.items()):
            if key.startswith("retries/"):
                retries.add_metric([key.partition("/")[2]], value)
        yield retries
        yield counter("dead_letters", "Requests that ran out of retries.", state["dead_letters"])
        yield gauge("queued", "Requests queued, not yet leased.", status["queued"])
        yield gauge("in_flight", "Requests leased to workers, not yet acked.", status["in_flight"])
        yield gauge("workers", "Workers alive.", status["workers"])
        yield gauge("paused", "1 while leasing is paused farm-wide.", int(status["paused"]))
        yield gauge("elapsed_seconds", "Time since the crawl started.", status["elapsed_s"])
        delay = GaugeMetricFamily(
            "spiderfarm_host_delay_seconds",
            f"Current politeness delay of the {BUSIEST_HOSTS} busiest hosts.",
            labels=["host"],
        )
        hosts = view.hosts
        busiest = sorted(
            hosts, key=lambda h: (-hosts[h]["in_flight"], -hosts[h]["queued"], -hosts[h]["pages"])
        )[:BUSIEST_HOSTS]
        for host in sorted(busiest):
            delay.add_metric([host], hosts[host]["delay_s"])
        yield delay
        spider = GaugeMetricFamily(
            "spiderfarm_spider_stat", "The spider's own stats (spider.stats).", labels=["key"]
        )
        for key, value in state["spider_stats"].items():
            spider.add_metric([key], value)
        yield spider


def metrics_text(latest: Callable[[], View]) -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(latest))
    return generate_latest(registry)
