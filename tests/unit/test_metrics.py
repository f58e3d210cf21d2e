"""The metrics registry: the cache's counters in the Prometheus text format, parsed back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from stalwart.core.cache import Cache, CacheKeys, MemoryBackend
from stalwart.core.metrics import Metrics


def scrape(metrics: Metrics) -> dict[str, float]:
    """Every sample of the exposition, by name and labels."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_cache_counters_move_with_the_cache() -> None:
    cache = Cache(MemoryBackend(max_entries=2))
    metrics = Metrics()
    metrics.watch_cache(cache)
    before = scrape(metrics)
    assert before["stalwart_cache_hits_total{backend=memory}"] == 0
    assert before["stalwart_cache_entries{backend=memory}"] == 0

    for i in range(3):  # three misses; the third evicts the first (two entries at most)
        cache.get_or_compute(CacheKeys.key("n", "e", i), lambda i=i: i, ttl=60)
    cache.get_or_compute(CacheKeys.key("n", "e", 2), lambda: "not called", ttl=60)
    cache.invalidate(CacheKeys.namespace("n"))

    after = scrape(metrics)
    assert after["stalwart_cache_misses_total{backend=memory}"] == 3
    assert after["stalwart_cache_hits_total{backend=memory}"] == 1
    assert after["stalwart_cache_evictions_total{backend=memory}"] == 1
    assert after["stalwart_cache_invalidations_total{backend=memory}"] == 1
    assert after["stalwart_cache_entries{backend=memory}"] == 2
    assert after["stalwart_cache_bytes{backend=memory}"] > 0
    assert "process_cpu_seconds_total{}" in after
    assert "python_gc_collections_total{generation=2}" in after


def test_two_registries_do_not_share_counters() -> None:
    one, two = Metrics(), Metrics()
    cache = Cache(MemoryBackend())
    one.watch_cache(cache)
    cache.get_or_compute(CacheKeys.key("n", "e", 1), lambda: 1, ttl=60)
    assert scrape(one)["stalwart_cache_misses_total{backend=memory}"] == 1
    assert not any(name.startswith("stalwart_cache") for name in scrape(two))
