"""The readiness runner: concurrency, a timeout per check, no pile-up of hung checks, reports."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from stalwart.core.health import (
    CheckSkipped,
    HealthCheck,
    HealthChecks,
    HealthCollector,
    run_checks,
)
from stalwart.errors import StorageFullError


def test_a_report_is_ready_when_no_check_fails_and_skipped_checks_do_not_count() -> None:
    def skipped() -> str:
        raise CheckSkipped("not here")

    report = run_checks(HealthCheck("a", lambda: "fine"), HealthCheck("b", skipped))

    assert report.ready
    assert report.as_dict() == {
        "status": "ok",
        "checks": {
            "a": {"status": "ok", "latency_ms": report.results[0].latency_ms, "critical": True},
            "b": {
                "status": "skipped",
                "latency_ms": report.results[1].latency_ms,
                "critical": True,
            },
        },
    }
    assert report.as_dict(full=True)["checks"]["b"]["detail"] == "not here"


def test_a_failing_check_makes_the_report_unavailable_with_its_type_and_error_id() -> None:
    def full() -> str:
        raise StorageFullError("/secret/path is full")

    report = run_checks(HealthCheck("filesystem", full), HealthCheck("ok", lambda: None))

    assert not report.ready
    entry = report.as_dict()["checks"]["filesystem"]
    assert entry["status"] == "error"
    assert entry["error"] == "StorageFullError"
    assert len(entry["error_id"]) == 12
    # The message (paths, hosts) is for the log and the CLI, not the public answer.
    assert "/secret/path" not in str(report.as_dict())
    assert "/secret/path" in report.as_dict(full=True)["checks"]["filesystem"]["detail"]


def test_a_failing_non_critical_check_degrades_the_report_but_leaves_it_ready() -> None:
    from stalwart.errors import CacheUnavailableError

    def redis_down() -> str:
        raise CacheUnavailableError("redis://cache:6379 does not answer")

    degraded = run_checks(
        HealthCheck("database", lambda: None), HealthCheck("cache", redis_down, critical=False)
    )

    assert degraded.ready
    assert degraded.status == "degraded"
    assert [r.name for r in degraded.degraded] == ["cache"]
    entry = degraded.as_dict()["checks"]["cache"]
    assert (entry["status"], entry["critical"], entry["error"]) == (
        "error",
        False,
        "CacheUnavailableError",
    )

    def database_down() -> str:
        raise StorageFullError("full")

    both = run_checks(
        HealthCheck("database", database_down), HealthCheck("cache", redis_down, critical=False)
    )
    assert not both.ready
    assert both.status == "unavailable"  # a critical failure outweighs the degradation
    assert [r.name for r in both.failing] == ["database", "cache"]


def test_a_hung_check_times_out_and_is_not_started_again_while_it_hangs() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hangs() -> str:
        calls.append(1)
        release.wait(30)
        return "back"

    checks = HealthChecks(
        [HealthCheck("slow", hangs), HealthCheck("fast", lambda: "fine")], timeout_s=0.2
    )
    began = time.monotonic()
    first = checks.run()
    second = checks.run()
    took = time.monotonic() - began

    for report in (first, second):
        slow = report.get("slow")
        assert slow is not None
        assert slow.status == "error"
        assert slow.error == "HealthCheckTimeoutError"
        assert report.get("fast") is not None
        assert report.get("fast").status == "ok"
    assert len(calls) == 1  # the second run waited on the hung call instead of a new one
    assert took < 10  # bounded by the timeouts, not by the hang (a loose bound on purpose)

    release.set()
    time.sleep(0.05)
    third = checks.run()
    assert third.ready
    assert len(calls) == 2  # it returned, so the next run starts a fresh call


def test_checks_run_at_once_so_slow_ones_do_not_add_up() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meets() -> str:
        barrier.wait()  # only passes if all three run at the same time
        return "met"

    report = run_checks(*(HealthCheck(f"c{i}", meets) for i in range(3)), timeout_s=10)

    assert report.ready


def test_a_recent_report_is_reused_within_max_age() -> None:
    calls: list[int] = []
    checks = HealthChecks([HealthCheck("a", lambda: str(calls.append(1)))])

    first = checks.run()
    assert checks.run(max_age_s=60) is first
    assert checks.run() is not first
    assert len(calls) == 2


def test_the_collector_exposes_readiness_per_check_and_the_free_space(tmp_path: object) -> None:
    from pathlib import Path

    def fails() -> str:
        raise StorageFullError("full")

    checks = HealthChecks(
        [
            HealthCheck("database", lambda: None),
            HealthCheck("disk", fails),
            HealthCheck("cache", fails, critical=False),
        ]
    )
    registry = CollectorRegistry()
    registry.register(HealthCollector(checks, Path(str(tmp_path)), 1234))

    def ok(check: str, critical: str = "true") -> float | None:
        return registry.get_sample_value(
            "stalwart_health_check_ok", {"check": check, "critical": critical}
        )

    assert registry.get_sample_value("stalwart_ready") == 0.0
    assert ok("database") == 1.0
    assert ok("disk") == 0.0
    assert ok("cache", "false") == 0.0
    latency = registry.get_sample_value(
        "stalwart_health_check_latency_seconds", {"check": "database"}
    )
    assert latency is not None
    assert latency >= 0
    free = registry.get_sample_value("stalwart_data_dir_free_bytes")
    assert free is not None
    assert free > 0
    assert registry.get_sample_value("stalwart_data_dir_min_free_bytes") == 1234.0
