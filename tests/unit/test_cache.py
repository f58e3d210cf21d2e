"""The in-process cache: hits, LRU and TTL (on a fake clock), bounds, single flight, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import RedisError

from stalwart.core.cache import (
    ID_BUCKETS,
    Cache,
    CacheError,
    CacheKeys,
    MemoryBackend,
    RedisBackend,
    Scope,
    _bucket,
)
from stalwart.core.config import load_config
from tests.conftest import free_port

K = CacheKeys.key


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def memory(clock: Clock | None = None, **bounds: int) -> Cache:
    return Cache(MemoryBackend(timer=clock or Clock(), **bounds))


def const(value: Any) -> Callable[[], Any]:
    return lambda: value


class Counter:
    """A computation that counts its calls and returns the count."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_second_call_is_a_hit() -> None:
    cache, fn = memory(), Counter()
    key = K("projects", "project", 7)
    assert cache.get_or_compute(key, fn, ttl=60) == 1
    assert cache.get_or_compute(key, fn, ttl=60) == 1
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.backend) == (1, 1, 1, "memory")
    assert stats.hit_ratio == 0.5
    assert stats.bytes > 0


def test_ttl_expires_on_the_injected_clock() -> None:
    clock = Clock()
    cache, fn = memory(clock), Counter()
    short, long = K("n", "e", "short"), K("n", "e", "long")
    cache.get_or_compute(short, fn, ttl=10)
    cache.get_or_compute(long, fn, ttl=100)
    clock.now += 9.999
    assert cache.get_or_compute(short, fn, ttl=10) == 1
    clock.now += 0.001
    assert cache.get_or_compute(short, fn, ttl=10) == 3  # expired at exactly 10 s
    assert cache.get_or_compute(long, fn, ttl=100) == 2
    assert cache.stats().expirations >= 1


def test_least_recently_used_entry_goes_first() -> None:
    cache = memory(max_entries=3)
    keys = [K("n", "e", i) for i in range(4)]
    for i, key in enumerate(keys[:3]):
        cache.get_or_compute(key, const(i), ttl=60)
    cache.get_or_compute(keys[0], const("recomputed"), ttl=60)  # 0 is now the most recent
    cache.get_or_compute(keys[3], const(3), ttl=60)  # evicts 1, the least recent
    assert cache.get_or_compute(keys[1], const("again"), ttl=60) == "again"
    assert cache.get_or_compute(keys[0], const("x"), ttl=60) == 0
    assert cache.stats().evictions == 2  # 1 for key 3, then 2 for key 1 again
    assert cache.stats().entries == 3


def test_bytes_bound_counts_json_length() -> None:
    cache = memory(max_bytes=4096)
    big = "x" * 1500
    for i in range(5):
        cache.get_or_compute(K("n", "e", i), const(big), ttl=60)
    stats = cache.stats()
    assert stats.bytes <= 4096
    assert stats.entries == 2
    # A value bigger than the whole cache is returned, not kept.
    huge = "y" * 5000
    assert cache.get_or_compute(K("n", "e", "huge"), const(huge), ttl=60) == huge
    assert cache.get_or_compute(K("n", "e", "huge"), const("fresh"), ttl=60) == "fresh"


def test_errors_are_not_cached() -> None:
    cache, calls = memory(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return "ok"

    key = K("n", "e", 1)
    with pytest.raises(ValueError, match="boom"):
        cache.get_or_compute(key, flaky, ttl=60)
    assert cache.get_or_compute(key, flaky, ttl=60) == "ok"
    assert cache.get_or_compute(key, flaky, ttl=60) == "ok"
    assert len(calls) == 2


def test_a_value_that_is_not_json_is_refused_with_the_key() -> None:
    cache = memory()
    with pytest.raises(CacheError, match=r"n:e:1:1 is not JSON \(set\)"):
        cache.get_or_compute(K("n", "e", 1), const({1, 2}), ttl=60)
    assert cache.get_or_compute(K("n", "e", 1), const([1, 2]), ttl=60) == [1, 2]


@pytest.mark.parametrize("ttl", [0, -1, 86_401])
def test_ttl_must_be_bounded(ttl: float) -> None:
    with pytest.raises(CacheError, match="TTL"):
        memory().get_or_compute(K("n", "e"), const(1), ttl=ttl)


def test_32_concurrent_callers_of_a_missing_key_compute_once() -> None:
    cache, calls = memory(), []
    release = threading.Event()

    def slow() -> dict[str, int]:
        calls.append(1)
        assert release.wait(30)
        return {"answer": 42}

    key = K("reports", "summary", "all")
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute(key, slow, ttl=60)))
        for _ in range(32)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while cache.stats().misses < 32:  # every caller has missed and joined the flight
        assert time.monotonic() < deadline, "the callers never all arrived"
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert results == [{"answer": 42}] * 32


def test_an_error_reaches_every_waiting_caller_and_is_not_kept() -> None:
    cache = memory()
    release = threading.Event()

    def failing() -> int:
        assert release.wait(30)
        raise RuntimeError("source down")

    key = K("n", "e", "x")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get_or_compute(key, failing, ttl=60)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while cache.stats().misses < 8:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(30)
    assert len(errors) == 8
    assert cache.get_or_compute(key, const("back"), ttl=60) == "back"


def test_invalidation_reaches_its_scope_only() -> None:
    cache = memory()
    a1, a2 = K("forms", "form", "a1"), K("forms", "form", "a2")
    other_entity, other_ns = K("forms", "draft", "a1"), K("jobs", "form", "a1")
    keys = [a1, a2, other_entity, other_ns]
    for key in keys:
        cache.get_or_compute(key, const("old"), ttl=60)

    def fresh() -> list[bool]:
        return [cache.get_or_compute(k, const("new"), ttl=60) == "new" for k in keys]

    assert _bucket(Scope("forms", "form", "a1")) != _bucket(Scope("forms", "form", "a2"))
    cache.invalidate(CacheKeys.entity("forms", "form", "a1"))
    assert fresh() == [True, False, False, False]
    cache.invalidate(CacheKeys.entity("forms", "form"))
    assert fresh() == [True, True, False, False]
    cache.invalidate(CacheKeys.namespace("forms"))
    assert fresh() == [True, True, True, False]
    cache.clear()
    assert fresh() == [True, True, True, True]
    assert cache.stats().invalidations == 4


def test_clear_one_namespace_frees_its_entries() -> None:
    cache = memory()
    cache.get_or_compute(K("a", "e", 1), const(1), ttl=60)
    cache.get_or_compute(K("b", "e", 1), const(1), ttl=60)
    cache.clear("a")
    assert cache.stats().entries == 1
    assert cache.get_or_compute(K("b", "e", 1), const(2), ttl=60) == 1


def test_a_computation_that_raced_an_invalidation_is_never_served() -> None:
    cache = memory()
    key = K("projects", "project", 1)

    def read_then_write_lands() -> str:
        # The computation read the old row; the write commits and invalidates meanwhile.
        cache.invalidate(CacheKeys.entity("projects", "project", 1))
        return "old row"

    assert cache.get_or_compute(key, read_then_write_lands, ttl=60) == "old row"
    assert cache.get_or_compute(key, const("new row"), ttl=60) == "new row"


def test_version_of_changes_with_invalidation() -> None:
    cache = memory()
    key = K("n", "e", 1)
    before = cache.version_of(key)
    assert before == cache.version_of(key)
    cache.invalidate(CacheKeys.entity("n", "e", 1))
    assert cache.version_of(key) != before
    cache.invalidate()  # nothing declared: nothing to do


def test_keys_and_scopes_are_validated() -> None:
    with pytest.raises(CacheError):
        K("", "e")
    with pytest.raises(CacheError):
        K("n", "")
    with pytest.raises(CacheError):
        Scope("")
    with pytest.raises(CacheError):
        Scope("n", None, "1")
    with pytest.raises(CacheError, match="Not a cache key"):
        CacheKeys.parse("a:b:c")
    assert str(CacheKeys.entity("a:b", "c")) == "a%3Ab:c"
    assert 0 <= _bucket(Scope("n", "e", "1")) < ID_BUCKETS


def test_an_unreachable_redis_computes_without_caching() -> None:
    cache = Cache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0"))
    fn = Counter()
    assert cache.get_or_compute(K("n", "e"), fn, ttl=60) == 1
    assert cache.get_or_compute(K("n", "e"), fn, ttl=60) == 2
    assert cache.stats().errors == 2
    with pytest.raises(RedisError):
        cache.invalidate(CacheKeys.namespace("n"))
    assert cache.stats().errors == 5  # two lookups, three invalidation attempts
    cache.close()


def test_from_config_builds_the_configured_backend() -> None:
    mem = Cache.from_config(load_config(cache_backend="memory", cache_max_entries=5))
    assert mem.backend.name == "memory"
    red = Cache.from_config(load_config(cache_backend="redis"))
    assert red.backend.name == "redis"
    red.close()
