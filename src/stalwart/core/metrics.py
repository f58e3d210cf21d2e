"""Metrics: the Prometheus registry ``/metrics`` serves for this process.

``Metrics`` owns one ``CollectorRegistry`` (not prometheus_client's global one, so tests and
several app contexts in one process do not share counters) and is built once, by
``init_app()``. Parts of the app that keep their own counters (the cache) are read at scrape
time by a collector, so their hot paths pay nothing for being measured.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from stalwart.core.cache import Cache


class CacheCollector(Collector):
    """The cache's counters of this process (``Cache.stats()``), read at each scrape."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        """One family per counter, labelled with the backend."""
        stats = self.cache.stats()
        labels = ["backend"]
        counters = (
            ("hits", "Lookups answered from the cache", stats.hits),
            ("misses", "Lookups that had to compute the value", stats.misses),
            ("local_hits", "Redis hits answered by this process's memory", stats.local_hits),
            (
                "evictions",
                "Entries dropped from this process's memory to stay in bounds",
                stats.evictions,
            ),
            (
                "expirations",
                "Entries dropped from this process's memory at their TTL",
                stats.expirations,
            ),
            (
                "invalidations",
                "Generation counters bumped by writes and clears",
                stats.invalidations,
            ),
            ("errors", "Cache backend failures (the value was computed uncached)", stats.errors),
        )
        for name, text, value in counters:
            family = CounterMetricFamily(f"stalwart_cache_{name}", text, labels=labels)
            family.add_metric([stats.backend], value)
            yield family
        for name, text, value in (
            ("entries", "Entries held in this process's memory", stats.entries),
            ("bytes", "Bytes (JSON plus overhead) held in this process's memory", stats.bytes),
        ):
            gauge = GaugeMetricFamily(f"stalwart_cache_{name}", text, labels=labels)
            gauge.add_metric([stats.backend], value)
            yield gauge


class Metrics:
    """This process's metrics and their Prometheus text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # Collections per generation: full (generation 2) collections stall every interaction
        # of the process, so their rate is worth watching (see web/server_tuning.py).
        GCCollector(registry=self.registry)

    def watch_cache(self, cache: Cache) -> None:
        """Expose ``cache``'s counters."""
        self.registry.register(CacheCollector(cache))

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)
