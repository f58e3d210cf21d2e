"""The cache (``stalwart.core.cache``): hit latency, what a miss adds to the computation, and
single flight, for each backend the app can be configured with.

    uv run python bench/cache_bench.py            # about half a minute
    uv run python bench/cache_bench.py --quick    # a few seconds

Each backend is built as the app builds it (``Cache.from_config``): the in-process memory
backend (the default), Redis without and, where the setting exists, with its in-process tier
(``STALWART_CACHE_REDIS_LOCAL``). Redis is the dedicated database ``STALWART_BENCH_CACHE_REDIS_URL``
(default ``redis://127.0.0.1:6379/14``), flushed before and after.

- **hit**: ``get_or_compute`` of a present key, timed call by call (p50/p99/max), for a value
  of about 1 KB and of about 100 KB of JSON (Redis sends and decodes the JSON on each hit
  unless the local tier already holds it);
- **miss + compute**: ``get_or_compute`` of a new key each time, with a function of known cost
  (a JSON-able dict built from a small computation) also timed alone: the difference is what
  the cache adds to a miss (a lookup, encoding, storing);
- **single flight**: 32 threads released at once on one missing key whose function sleeps
  50 ms; how many times the function ran (must be once per round) and the callers' latency.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from functools import partial
from typing import Any

from benchlib import (
    ms_cell,
    part_main,
    prepare_like_the_app,
    stats,
    timed_ms,
)

from stalwart.core.cache import Cache, CacheKey, CacheKeys
from stalwart.core.config import AppConfig, load_config

REDIS_URL = os.environ.get("STALWART_BENCH_CACHE_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = "stalwart:cache-bench:"
TTL_S = 600.0
SIZES = {"1 KB": 1_000, "100 KB": 100_000}  # JSON bytes of the cached value, about
CALLERS = 32
FLIGHT_SLEEP_S = 0.05
COMPUTE_N = 3_000  # the known computation's size
HIT_TARGET_MS = 1.0


def variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """The backends to measure: name -> (description, settings for ``load_config``)."""
    redis: dict[str, Any] = {
        "cache_backend": "redis",
        "redis_url": REDIS_URL,
        "cache_redis_prefix": PREFIX,
    }
    found: dict[str, tuple[str, dict[str, Any]]] = {
        "memory": ("in-process memory (the default)", {"cache_backend": "memory"})
    }
    if "cache_redis_local" in AppConfig.model_fields:
        found["redis"] = ("Redis, no local tier", {**redis, "cache_redis_local": False})
        found["redis+local"] = (
            "Redis with its in-process tier",
            {**redis, "cache_redis_local": True},
        )
    else:
        found["redis"] = ("Redis", redis)
    return found


def value_of(size: int) -> dict[str, Any]:
    """A JSON-able value of about ``size`` bytes: rows of a small table."""
    row = {"id": 0, "name": "item-00000", "price": 12.5, "tags": ["a", "b"]}  # ~60 bytes
    return {"rows": [{**row, "id": i, "name": f"item-{i:05d}"} for i in range(size // 62)]}


def compute() -> dict[str, Any]:
    """The known computation for the misses: a few thousand multiplications into a dict."""
    values = [(i * 7919) % 1009 for i in range(COMPUTE_N)]
    return {"head": values[:50], "sum": sum(values), "max": max(values)}


def never() -> Any:
    """The function given to a lookup that must hit."""
    raise AssertionError("a hit computed")


def hits(cache: Cache, size: int, n: int, budget_s: float) -> dict[str, Any]:
    """``get_or_compute`` of one present key, ``n`` times (or for ``budget_s``), each timed."""
    key = CacheKeys.key("bench", "hit", size)
    cache.get_or_compute(key, lambda: value_of(size), TTL_S)
    samples: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(samples) < n and time.monotonic() < deadline:
        samples.append(timed_ms(lambda: cache.get_or_compute(key, never, TTL_S)))
    return stats(samples)


def misses(cache: Cache, n: int, budget_s: float) -> dict[str, Any]:
    """The computation alone, then ``get_or_compute`` of a new key each time."""
    alone = [timed_ms(compute) for _ in range(n)]
    samples: list[float] = []
    deadline = time.monotonic() + budget_s
    run = f"{time.time_ns()}"
    while len(samples) < n and time.monotonic() < deadline:
        key = CacheKeys.key("bench", "miss", f"{run}-{len(samples)}")
        samples.append(timed_ms(partial(cache.get_or_compute, key, compute, TTL_S)))
    fn, miss = stats(alone), stats(samples)
    return {
        "fn_alone": fn,
        "miss": miss,
        "overhead_p50_ms": round(miss["p50_ms"] - fn["p50_ms"], 3) if miss["n"] else None,
    }


def flight_round(cache: Cache, key: CacheKey) -> tuple[int, list[float]]:
    """``CALLERS`` threads released at once on the missing ``key``: fn calls, latencies."""
    calls = 0
    latencies: list[float] = []
    lock = threading.Lock()
    gate = threading.Barrier(CALLERS + 1)

    def slow() -> dict[str, str]:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(FLIGHT_SLEEP_S)
        return {"key": str(key)}

    def caller() -> None:
        gate.wait(timeout=10)
        elapsed = timed_ms(lambda: cache.get_or_compute(key, slow, TTL_S))
        with lock:
            latencies.append(elapsed)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    gate.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    return calls, latencies


def single_flight(cache: Cache, rounds: int, budget_s: float) -> dict[str, Any]:
    """``rounds`` rounds of ``flight_round``, each on a new key."""
    calls_per_round: list[int] = []
    latencies: list[float] = []
    deadline = time.monotonic() + budget_s
    for r in range(rounds):
        if time.monotonic() > deadline:
            break
        calls, times = flight_round(
            cache, CacheKeys.key("bench", "flight", f"{time.time_ns()}-{r}")
        )
        calls_per_round.append(calls)
        latencies += times
    return {
        "callers": CALLERS,
        "fn_sleep_ms": FLIGHT_SLEEP_S * 1000,
        "rounds": len(calls_per_round),
        "fn_calls_per_round": calls_per_round,
        "callers_latency": stats(latencies),
    }


def flush_redis() -> str | None:
    """Empty the benchmark's Redis database; why it cannot be used, or None."""
    from redis import Redis

    try:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=5)
        client.flushdb()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(doc: dict[str, Any], *, quick: bool) -> None:
    """Every measurement for every backend into ``doc`` (kept if the run is stopped)."""
    prepare_like_the_app()
    n_memory, n_redis, n_miss, rounds, budget_s = (
        (2_000, 500, 200, 5, 2.0) if quick else (50_000, 5_000, 2_000, 30, 10.0)
    )
    doc.update(
        {
            "settings": {
                "redis_url": REDIS_URL,
                "sizes": SIZES,
                "hits_memory": n_memory,
                "hits_redis": n_redis,
                "misses": n_miss,
                "flight_rounds": rounds,
                "budget_s_per_measurement": budget_s,
            },
            "backends": {},
        }
    )
    try:
        measure_all(doc, n_memory, n_redis, n_miss, rounds, budget_s)
    finally:
        doc["targets"] = targets(doc)


def measure_all(
    doc: dict[str, Any], n_memory: int, n_redis: int, n_miss: int, rounds: int, budget_s: float
) -> None:
    """Each backend in turn; Redis flushed before and after."""
    for name, (description, settings) in variants().items():
        print(f"== cache: {name}", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"description": description}
        doc["backends"][name] = entry
        redis = settings["cache_backend"] == "redis"
        problem = flush_redis() if redis else None
        if problem:
            entry["error"] = f"Redis at {REDIS_URL}: {problem}"
            continue
        cache = Cache.from_config(load_config(**settings))
        try:
            n = n_redis if redis else n_memory
            entry["hit"] = {label: hits(cache, size, n, budget_s) for label, size in SIZES.items()}
            entry["miss_and_compute"] = misses(cache, n_miss, budget_s)
            entry["single_flight"] = single_flight(cache, rounds, budget_s)
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {err}"
        finally:
            cache.close()
            if redis:
                flush_redis()


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Hit p99 < 1 ms per backend and size, and one computation per single flight."""
    found = []
    for name, entry in doc["backends"].items():
        for label, hit in entry.get("hit", {}).items():
            p99 = hit.get("p99_ms")
            found.append(
                {
                    "target": f"cache hit p99 < {HIT_TARGET_MS:g} ms ({name}, {label})",
                    "value": f"{p99} ms",
                    "met": p99 is not None and p99 < HIT_TARGET_MS,
                }
            )
        flight = entry.get("single_flight")
        if flight:
            calls = flight["fn_calls_per_round"]
            found.append(
                {
                    "target": f"single flight: fn runs once per round of {CALLERS} ({name})",
                    "value": f"{max(calls)} at most in {len(calls)} rounds",
                    "met": bool(calls) and set(calls) == {1},
                }
            )
        if "error" in entry:
            found.append({"target": f"{name} measured", "value": entry["error"], "met": False})
    return found


def report(doc: dict[str, Any]) -> str:
    """The cache results as markdown."""
    sizes = list(doc.get("settings", {}).get("sizes", SIZES))
    lines = [
        "## Cache (`get_or_compute`, in this process)",
        "",
        "ms p50 / p99 / max. Miss: a new key each time, with a function of known cost; "
        f"single flight: {CALLERS} threads on one missing key, the function sleeps "
        f"{FLIGHT_SLEEP_S * 1000:g} ms.",
        "",
        "| backend | "
        + " | ".join(f"hit, {s}" for s in sizes)
        + " | fn alone | miss + fn | cache overhead on a miss (p50) "
        + "| single flight: fn calls per round | callers' latency |",
        "| --- |" + " --- |" * (len(sizes) + 5),
    ]
    keys = ("p50", "p99", "max")
    for name, e in doc.get("backends", {}).items():
        if "error" in e:
            lines.append(f"| {name} | error: {e['error']} |")
            continue
        miss, flight = e.get("miss_and_compute", {}), e.get("single_flight", {})
        calls = sorted(set(flight.get("fn_calls_per_round", [])))
        lines.append(
            f"| {e['description']} | "
            + " | ".join(ms_cell(e.get("hit", {}).get(s), keys) for s in sizes)
            + f" | {ms_cell(miss.get('fn_alone'), keys)} | {ms_cell(miss.get('miss'), keys)} "
            f"| {miss.get('overhead_p50_ms')} ms "
            f"| {', '.join(map(str, calls))} ({flight.get('rounds')} rounds) "
            f"| {ms_cell(flight.get('callers_latency'), keys)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run; print markdown; write results/cache.json and cache.md."""
    return part_main(
        "cache",
        __doc__.splitlines()[0],
        lambda results, quick: run(results, quick=quick),
        report,
        quick_help="fewer lookups, for a smoke run",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
