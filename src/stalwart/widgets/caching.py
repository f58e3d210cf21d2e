"""Streamlit's own caches with explicit keys and TTLs, cleared by Stalwart's invalidation.

``st.cache_data`` keys a value by the hash of its function's arguments; here the only hashed
argument is the ``CacheKey`` plus the generations the app's ``Cache`` has for it
(``Cache.version_of``). A write that declares the key's scope (``uow.invalidates``) bumps a
generation, so the next call asks Streamlit for a key it has never seen and computes afresh;
the old entry ages out by its TTL and ``max_entries``. With the Redis backend that reaches
every app process, like ``get_or_compute`` does.

Use these for values that are not JSON (DataFrames, figures: ``cached_data``) or that must
not be copied (clients, models: ``cached_resource``); use ``Cache.get_or_compute`` for the
rest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from stalwart.bootstrap import current_app
from stalwart.core.cache import Cache, CacheKey

T = TypeVar("T")
#: Entries each of Streamlit's caches keeps (per TTL) before dropping the least recent.
MAX_ENTRIES = 1000


def cached_data(key: CacheKey, fn: Callable[[], T], *, ttl: float, cache: Cache | None = None) -> T:
    """``fn()`` through ``st.cache_data`` under ``key`` for ``ttl`` s (a copy per caller)."""
    token = (cache or current_app().cache).version_of(key)
    result: T = _data_function(float(ttl))(token, fn)
    return result


def cached_resource(
    key: CacheKey, fn: Callable[[], T], *, ttl: float, cache: Cache | None = None
) -> T:
    """``fn()`` through ``st.cache_resource`` under ``key`` for ``ttl`` s (one shared object)."""
    token = (cache or current_app().cache).version_of(key)
    result: T = _resource_function(float(ttl))(token, fn)
    return result


@functools.cache
def _data_function(ttl: float) -> Callable[[str, Callable[[], Any]], Any]:
    def compute(token: str, _fn: Callable[[], Any]) -> Any:  # "_fn": not hashed by Streamlit
        return _fn()

    # Streamlit names a cache after the function's qualname: one cache per TTL.
    compute.__qualname__ = f"stalwart_cached_data_ttl_{ttl:g}"
    return st.cache_data(ttl=ttl, max_entries=MAX_ENTRIES, show_spinner=False)(compute)


@functools.cache
def _resource_function(ttl: float) -> Callable[[str, Callable[[], Any]], Any]:
    def compute(token: str, _fn: Callable[[], Any]) -> Any:
        return _fn()

    compute.__qualname__ = f"stalwart_cached_resource_ttl_{ttl:g}"
    return st.cache_resource(ttl=ttl, max_entries=MAX_ENTRIES, show_spinner=False)(compute)
