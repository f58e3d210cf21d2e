"""The metrics registry: what the app reports, read back through the Prometheus text parser.

Real parts throughout: a SQLite database for run_tx and the jobs table, log_error's real log
records, and child processes sharing one metrics directory (prometheus_client's multiprocess
mode is chosen once per process, so it is never switched on in the test process itself).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stalwart import __version__
from stalwart.core.cache import Cache, CacheKeys, MemoryBackend
from stalwart.core.config import AppConfig
from stalwart.core.database import DB, RetryPolicy, UnitOfWork
from stalwart.core.job_runner import claim_next, run_claimed
from stalwart.core.jobs import Job, JobCounts, JobQueue, JobStatus, NoDispatch, count_jobs
from stalwart.core.logs import configure_logging, get_logger, log_error
from stalwart.core.metrics import BuildInfo, JobsCollector, Metrics, metrics_directory
from stalwart.core.migrations import migrate
from stalwart.errors import ConflictError, RetriesExhaustedError, TransientDatabaseError
from tests.conftest import PYTHON, child_env
from tests.job_functions import add
from tests.jobs_harness import FAST


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


# --- what the app reports ------------------------------------------------------------------


def family_names(metrics: Metrics) -> set[str]:
    """Every metric family the exposition declares (with or without samples)."""
    return {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}


def test_every_reported_metric_is_declared_before_anything_happens() -> None:
    metrics = Metrics(build=BuildInfo("1.2.3", "abc123"))
    names = family_names(metrics)
    assert {
        "stalwart_interaction_seconds",
        "stalwart_page_switch_seconds",
        "stalwart_errors",
        "stalwart_db_transaction_seconds",
        "stalwart_db_retries",
        "stalwart_db_failures",
        "stalwart_job_duration_seconds",
        "stalwart_active_sessions",
        "stalwart_build_info",
    } <= names
    samples = scrape(metrics)
    assert samples["stalwart_build_info{commit=abc123,version=1.2.3}"] == 1
    assert samples["stalwart_active_sessions{}"] == 0


def test_observations_land_in_their_labels() -> None:
    metrics = Metrics()
    for seconds in (0.004, 0.006, 0.2):
        metrics.observe_interaction("home", "full", seconds)
    metrics.observe_interaction("form-demo", "fragment", 0.003)
    metrics.observe_page_switch("form-demo", 0.01)
    metrics.observe_job("succeeded", 1.5)
    metrics.observe_job("failed", 0.2)
    metrics.session_opened()
    metrics.session_opened()
    metrics.session_closed()

    samples = scrape(metrics)
    assert samples["stalwart_interaction_seconds_count{kind=full,page=home}"] == 3
    assert samples["stalwart_interaction_seconds_bucket{kind=full,le=0.005,page=home}"] == 1
    assert samples["stalwart_interaction_seconds_bucket{kind=full,le=0.0075,page=home}"] == 2
    assert samples["stalwart_interaction_seconds_count{kind=fragment,page=form-demo}"] == 1
    assert samples["stalwart_page_switch_seconds_count{page=form-demo}"] == 1
    assert samples["stalwart_job_duration_seconds_count{status=succeeded}"] == 1
    assert samples["stalwart_job_duration_seconds_count{status=failed}"] == 1
    assert samples["stalwart_active_sessions{}"] == 1


def test_build_info_names_this_version_and_a_commit() -> None:
    build = BuildInfo.detect()
    assert build.version == __version__
    assert build.commit  # a sha from git or STALWART_COMMIT, else "unknown"
    samples = scrape(Metrics(build=build))
    assert samples[f"stalwart_build_info{{commit={build.commit},version={__version__}}}"] == 1


def test_log_error_reports_are_counted_by_type() -> None:
    configure_logging("INFO", stream=io.StringIO())
    earlier, metrics = Metrics(), Metrics()
    earlier.count_errors()
    metrics.count_errors()  # the app's current metrics count; an earlier context's stop
    try:
        log_error(ValueError("bad"), {"where": "test"})
        log_error(ValueError("worse"))
        log_error(KeyError("k"))
        get_logger("stalwart.pages.shell").error("not a report")  # another logger: not counted
    finally:
        metrics.close()
        earlier.close()
    log_error(ValueError("after close"))

    samples = scrape(metrics)
    assert samples["stalwart_errors_total{type=ValueError}"] == 2
    assert samples["stalwart_errors_total{type=KeyError}"] == 1
    assert not any(name.startswith("stalwart_errors_total") for name in scrape(earlier))


# --- DB.run_tx ------------------------------------------------------------------------------


def test_run_tx_reports_latency_retries_and_failures(tmp_path: Path) -> None:
    metrics = Metrics()
    db = DB(f"sqlite:///{tmp_path / 'm.db'}", retry=RetryPolicy(3, 0.0, 0.0), monitor=metrics)
    try:
        assert db.run_tx(lambda uow: 1) == 1

        calls = {"n": 0}

        def busy_once(uow: UnitOfWork) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise TransientDatabaseError("busy", kind="busy")
            return 2

        assert db.run_tx(busy_once) == 2

        def always_busy(uow: UnitOfWork) -> None:
            raise TransientDatabaseError("still busy", kind="busy")

        with pytest.raises(RetriesExhaustedError):
            db.run_tx(always_busy)

        def refuse(uow: UnitOfWork) -> None:
            raise ConflictError("stale version")

        with pytest.raises(ConflictError):
            db.run_tx(refuse)
    finally:
        db.dispose()

    samples = scrape(metrics)
    assert samples["stalwart_db_transaction_seconds_count{outcome=committed}"] == 2
    assert samples["stalwart_db_transaction_seconds_count{outcome=failed}"] == 1
    assert samples["stalwart_db_transaction_seconds_count{outcome=aborted}"] == 1
    assert samples["stalwart_db_retries_total{kind=busy}"] == 1 + 2  # once, then twice
    assert samples["stalwart_db_failures_total{error=RetriesExhaustedError}"] == 1


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_are_counted_by_status_and_read_at_most_once_per_ttl(tmp_path: Path) -> None:
    db = DB(f"sqlite:///{tmp_path / 'j.db'}")
    migrate(db)
    queue = JobQueue(db, NoDispatch())
    reads = {"n": 0}
    now = {"t": 100.0}

    def read() -> JobCounts:
        reads["n"] += 1
        return count_jobs(db)

    metrics = Metrics()
    metrics.registry.register(JobsCollector(read, ttl_s=2.0, clock=lambda: now["t"]))
    try:
        empty = scrape(metrics)
        assert empty["stalwart_jobs{status=queued}"] == 0
        assert empty["stalwart_jobs_oldest_queued_age_seconds{}"] == 0
        for n in range(3):
            queue.enqueue(Job.of(add, {"a": n, "b": 1}), user="tester")
        assert scrape(metrics)["stalwart_jobs{status=queued}"] == 0  # within the TTL: cached
        now["t"] += 2.0
        after = scrape(metrics)
    finally:
        db.dispose()

    assert reads["n"] == 2
    assert after["stalwart_jobs{status=queued}"] == 3
    assert after["stalwart_jobs{status=running}"] == 0
    assert after["stalwart_jobs{status=failed}"] == 0
    assert after["stalwart_jobs_oldest_queued_age_seconds{}"] >= 0


def test_jobs_gauges_are_left_out_while_the_table_cannot_be_read(tmp_path: Path) -> None:
    db = DB(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no jobs table
    metrics = Metrics()
    metrics.watch_jobs(lambda: count_jobs(db))
    try:
        samples = scrape(metrics)
    finally:
        db.dispose()
    assert "stalwart_jobs" in family_names(metrics)
    assert not any(name.startswith("stalwart_jobs{") for name in samples)


def test_a_job_run_reports_its_duration_by_outcome(tmp_path: Path) -> None:
    db = DB(f"sqlite:///{tmp_path / 'run.db'}")
    migrate(db)
    metrics = Metrics()
    queue = JobQueue(db, NoDispatch())
    try:
        queue.enqueue(Job.of(add, {"a": 1, "b": 2}), user="tester")
        claim = claim_next(db, "test-worker", "embedded")
        assert claim is not None
        status = run_claimed(db, claim, FAST, NoDispatch(), metrics=metrics)
    finally:
        db.dispose()
    assert status == JobStatus.SUCCEEDED
    assert scrape(metrics)["stalwart_job_duration_seconds_count{status=succeeded}"] == 1


# --- several processes, one directory -------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from stalwart.core.metrics import Metrics

metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
page = sys.argv[2]
for _ in range(int(sys.argv[3])):
    metrics.observe_interaction(page, "full", 0.004)
metrics.count_error("ValueError")
metrics.transaction_ended(0.002, None)
metrics.session_opened()
if sys.argv[4] == "close":
    metrics.close()  # a process that stops cleanly takes its sessions with it
"""

SCRAPER = """
import sys
from pathlib import Path
from stalwart.core.metrics import BuildInfo, Metrics

metrics = Metrics(multiprocess_dir=Path(sys.argv[1]), build=BuildInfo("9.9.9", "feed"))
sys.stdout.write(metrics.exposition().decode())
"""


def run_python(code: str, *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "-c", code, *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def parse(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_one_scrape_adds_up_the_processes_that_share_a_directory(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    run_python(WRITER, str(shared), "home", "3", "close")
    run_python(WRITER, str(shared), "home", "2", "keep")
    run_python(WRITER, str(shared), "form-demo", "1", "keep")

    samples = parse(run_python(SCRAPER, str(shared)))

    assert samples["stalwart_interaction_seconds_count{kind=full,page=home}"] == 5
    assert samples["stalwart_interaction_seconds_bucket{kind=full,le=0.005,page=home}"] == 5
    assert samples["stalwart_interaction_seconds_count{kind=full,page=form-demo}"] == 1
    assert samples["stalwart_errors_total{type=ValueError}"] == 3
    assert samples["stalwart_db_transaction_seconds_count{outcome=committed}"] == 3
    # Live gauges: the process that closed no longer counts; the two others do.
    assert samples["stalwart_active_sessions{}"] == 2
    assert samples["stalwart_build_info{commit=feed,version=9.9.9}"] == 1


def test_settings_or_prometheus_variable_choose_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics_directory(AppConfig(_env_file=None)) is None
    chosen = AppConfig(_env_file=None, metrics_dir=tmp_path)
    assert metrics_directory(chosen) == tmp_path
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    assert metrics_directory(AppConfig(_env_file=None)) == tmp_path / "prom"
