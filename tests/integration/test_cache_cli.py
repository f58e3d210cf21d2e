"""``app cache clear`` and ``app cache stats`` as an operator runs them."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from stalwart.core.cache import Cache, CacheKeys, RedisBackend
from tests.conftest import PYTHON, REDIS_URL, child_env, need, redis_problem


def app(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", "cache", *args],
        capture_output=True,
        text=True,
        env=child_env(STALWART_LOG_LEVEL="WARNING", **env),
        timeout=120,
    )


def test_the_memory_backend_explains_why_there_is_nothing_to_clear() -> None:
    for args in (["clear"], ["stats"]):
        done = app(*args, STALWART_CACHE_BACKEND="memory")
        assert done.returncode == 2
        assert "each app process holds its own cache" in done.stderr
        assert "what to do: Restart the app processes" in done.stderr


@pytest.fixture
def shared() -> Iterator[tuple[Cache, dict[str, str]]]:
    need("redis", redis_problem())
    prefix = f"stalwart-test:{uuid.uuid4().hex[:8]}:"
    cache = Cache(RedisBackend(REDIS_URL, prefix=prefix))
    env = {
        "STALWART_CACHE_BACKEND": "redis",
        "STALWART_REDIS_URL": REDIS_URL,
        "STALWART_CACHE_REDIS_PREFIX": prefix,
    }
    yield cache, env
    names = list(cache.backend.redis.scan_iter(match=prefix + "*"))  # type: ignore[attr-defined]
    if names:
        cache.backend.redis.delete(*names)  # type: ignore[attr-defined]
    cache.close()


@pytest.mark.redis
def test_clear_and_stats_on_redis(shared: tuple[Cache, dict[str, str]]) -> None:
    cache, env = shared
    a, b = CacheKeys.key("a", "e", 1), CacheKeys.key("b", "e", 1)
    for key in (a, b, a):
        cache.get_or_compute(key, lambda: "old", ttl=60)
    stats = app("stats", **env)
    assert stats.returncode == 0, stats.stderr
    assert "hits: 1\nmisses: 2\nhit ratio: 33.3%" in stats.stdout
    assert "entries: 2" in stats.stdout
    done = app("clear", "--namespace", "a", **env)
    assert (done.returncode, done.stdout.strip()) == (0, "cleared: namespace 'a'")
    assert cache.get_or_compute(a, lambda: "new", ttl=60) == "new"
    assert cache.get_or_compute(b, lambda: "new", ttl=60) == "old"
    assert app("clear", **env).stdout.strip() == "cleared: everything"
    assert cache.get_or_compute(b, lambda: "new", ttl=60) == "new"
    assert "invalidations: 2" in app("stats", **env).stdout


def test_an_unreachable_redis_is_reported() -> None:
    env = {"STALWART_CACHE_BACKEND": "redis", "STALWART_REDIS_URL": "redis://127.0.0.1:1/0"}
    for args in (["clear"], ["stats"]):
        done = app(*args, **env)
        assert done.returncode == 1
        assert "what to do: Check that Redis is running" in done.stderr
