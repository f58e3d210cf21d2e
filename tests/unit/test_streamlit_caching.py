"""Streamlit's caches behind explicit keys: invalidated by the same scopes as the cache."""

from __future__ import annotations

import pytest

from stalwart.core.cache import Cache, CacheKeys, MemoryBackend
from stalwart.widgets.caching import cached_data, cached_resource

pytestmark = pytest.mark.filterwarnings("ignore")  # "no runtime found": fine outside a page


@pytest.mark.parametrize("helper", [cached_data, cached_resource])
def test_a_declared_write_clears_the_streamlit_entry(helper) -> None:  # type: ignore[no-untyped-def]
    cache = Cache(MemoryBackend())
    key = CacheKeys.key("reports", "table", "q1")
    calls: list[int] = []

    def build() -> list[int]:
        calls.append(1)
        return [len(calls)]

    assert helper(key, build, ttl=60, cache=cache) == [1]
    assert helper(key, build, ttl=60, cache=cache) == [1]
    assert helper(CacheKeys.key("reports", "table", "q2"), build, ttl=60, cache=cache) == [2]
    cache.invalidate(CacheKeys.entity("reports", "table", "q1"))
    assert helper(key, build, ttl=60, cache=cache) == [3]
    assert helper(key, build, ttl=30, cache=cache) == [4]  # another TTL: another cache
    assert len(calls) == 4
