"""Metrics: the Prometheus registry ``/metrics`` serves, for one process or for several.

``Metrics`` is built once, by ``init_app()``, and handed to what it measures: the page shell
(interaction and page-switch latency), ``DB.run_tx`` (transaction latency, retries, failures),
the job runner (durations), the websocket middleware (active sessions) and error reporting
(``log_error``'s records, counted by type). Each of those pays one counter increment or one
histogram observation; nothing on an interaction's path reads the database for metrics.

Values read elsewhere are read at scrape time by collectors: the cache's counters
(``Cache.stats()``), the jobs per status (one grouped count of the ``jobs`` table, kept for a
couple of seconds) and the build (version, commit).

**One process** (the default): the metrics live in this object's own ``CollectorRegistry`` (not
prometheus_client's global one, so tests and several app contexts in one process do not share
counters).

**Several processes** (``STALWART_METRICS_DIR``, or prometheus_client's own
``PROMETHEUS_MULTIPROC_DIR``): every process writes its counters, histograms and the sessions
gauge to files in that directory (prometheus_client's multiprocess mode) and a scrape of any
of them adds up all of them. prometheus_client chooses file-backed values process-wide, so in
this mode the metric objects are one set per process (``_PROCESS_INSTRUMENTS``), whichever
``Metrics`` writes to them. The collectors read at scrape time (cache, process, GC) describe the
process that answered the scrape; jobs and build info are the same from any process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from stalwart.core.build import build_commit, build_version
from stalwart.core.cache import Cache
from stalwart.core.logs import ERRORS_LOGGER, get_logger
from stalwart.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from stalwart.core.config import AppConfig
    from stalwart.core.jobs import JobCounts

log = get_logger(__name__)

#: What an interaction may cost: the budget is 15 ms of server work, 50 ms at p95 in all.
INTERACTION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
TRANSACTION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
JOB_BUCKETS: Final = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: how long one read of the jobs table answers scrapes (several scrapers, one count)
JOBS_READ_TTL_S: Final = 2.0
UNKNOWN: Final = "unknown"

#: multiprocess mode: the metric objects of this process (see the module's docstring)
_PROCESS_INSTRUMENTS: dict[str, Instruments] = {}
_process_lock = threading.Lock()


@dataclass(frozen=True)
class BuildInfo:
    """What is running: the package version and the commit it was built from."""

    version: str
    commit: str

    @classmethod
    def detect(cls) -> BuildInfo:
        """This process's build (``core.build``: ``STALWART_COMMIT``, else git, else unknown)."""
        return cls(build_version(), build_commit())


class Instruments:
    """The metric objects the app writes to; registered in ``registry`` unless it is None."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.interaction = Histogram(
            "stalwart_interaction_seconds",
            "Server time of one script run: a full run of the page or a fragment rerun",
            ["page", "kind"],
            buckets=INTERACTION_BUCKETS,
            registry=registry,
        )
        self.page_switch = Histogram(
            "stalwart_page_switch_seconds",
            "Server time of a full run that showed another page than the tab's previous run",
            ["page"],
            buckets=INTERACTION_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "stalwart_errors",
            "Errors reported with an error id (log_error), by exception type",
            ["type"],
            registry=registry,
        )
        self.transaction = Histogram(
            "stalwart_db_transaction_seconds",
            "Time of DB.run_tx, retries and their waits included, by outcome",
            ["outcome"],
            buckets=TRANSACTION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "stalwart_db_retries",
            "Transient database failures that run_tx retried, by kind",
            ["kind"],
            registry=registry,
        )
        self.failures = Counter(
            "stalwart_db_failures",
            "Transactions that ended with a database error (retries exhausted included)",
            ["error"],
            registry=registry,
        )
        self.job = Histogram(
            "stalwart_job_duration_seconds",
            "Run time of one attempt of a job, by how the attempt ended",
            ["status"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self._registry = registry
        self._sessions: Gauge | None = None
        self._lock = threading.Lock()
        if registry is not None:
            self.sessions()  # shown at 0 from the start

    def sessions(self) -> Gauge:
        """The sessions gauge, made on first use: with files, only a process that serves
        sessions (not each CLI command) writes one, and it is removed when the process ends."""
        with self._lock:
            if self._sessions is None:
                self._sessions = Gauge(
                    "stalwart_active_sessions",
                    "Browser tabs connected (Streamlit websockets open) to the app processes",
                    registry=self._registry,
                    multiprocess_mode="livesum",
                )
            return self._sessions


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


class JobsCollector(Collector):
    """Jobs per status from the ``jobs`` table, read at most once per ``ttl_s``."""

    def __init__(
        self,
        read: Callable[[], JobCounts],
        *,
        ttl_s: float = JOBS_READ_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._counts: JobCounts | None = None

    def counts(self) -> JobCounts | None:
        """The latest counts (read again when older than ``ttl_s``); None if unreadable."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl_s:
                self._read_at = now
                try:
                    self._counts = self.read()
                except Exception as err:
                    # A scrape must answer while the database is down (readiness says why);
                    # the jobs gauges are then left out rather than shown stale.
                    log.warning("jobs not counted for metrics", error=str(err))
                    self._counts = None
            return self._counts

    def collect(self) -> Iterator[Metric]:
        """``stalwart_jobs{status}`` and the age of the oldest queued job."""
        counts = self.counts()
        jobs = GaugeMetricFamily(
            "stalwart_jobs", "Jobs in the jobs table, by status", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "stalwart_jobs_oldest_queued_age_seconds",
            "How long the oldest queued job has waited (0 when none waits)",
        )
        if counts is not None:
            for status, count in sorted(counts.by_status.items()):
                jobs.add_metric([status], count)
            oldest.add_metric([], counts.oldest_queued_age_s)
        yield jobs
        yield oldest


class BuildCollector(Collector):
    """``stalwart_build_info{version,commit} 1``."""

    def __init__(self, build: BuildInfo) -> None:
        self.build = build

    def collect(self) -> Iterator[Metric]:
        """The one sample, whose labels are the information."""
        family = GaugeMetricFamily(
            "stalwart_build_info",
            "The running build: package version and commit (always 1)",
            labels=["version", "commit"],
        )
        family.add_metric([self.build.version, self.build.commit], 1)
        yield family


class ErrorCounter(logging.Handler):
    """Counts the records ``log_error`` writes, by their ``error_type``."""

    def __init__(self, count: Callable[[str], None]) -> None:
        super().__init__(level=logging.ERROR)
        self.count = count

    def emit(self, record: logging.LogRecord) -> None:
        """One increment; structlog hands the event dict over as the record's message."""
        event = record.msg
        kind = event.get("error_type") if isinstance(event, dict) else None
        self.count(str(kind) if kind else UNKNOWN)


class Metrics:
    """The app's metrics and their Prometheus text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, *, multiprocess_dir: Path | None = None, build: BuildInfo | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.build = build
        if multiprocess_dir is None:
            self.instruments = Instruments(self.registry)
        else:
            self.instruments = _process_instruments(multiprocess_dir)
            MultiProcessCollector(  # type: ignore[no-untyped-call]
                self.registry, path=str(multiprocess_dir)
            )
        ProcessCollector(registry=self.registry)
        # Collections per generation: full (generation 2) collections stall every interaction
        # of the process, so their rate is worth watching (see web/server_tuning.py).
        GCCollector(registry=self.registry)
        if build is not None:
            self.registry.register(BuildCollector(build))
        self._error_counter: ErrorCounter | None = None

    @classmethod
    def from_config(cls, cfg: AppConfig, *, build: BuildInfo | None = None) -> Metrics:
        """The metrics the settings describe: several processes with ``STALWART_METRICS_DIR``
        (or prometheus_client's own ``PROMETHEUS_MULTIPROC_DIR``), else this one."""
        return cls(multiprocess_dir=metrics_directory(cfg), build=build)

    # --- what the app reports (cheap: one increment or observation each) -----------------

    def observe_interaction(self, page: str, kind: str, seconds: float) -> None:
        """One script run of ``page``: ``kind`` is ``full`` or ``fragment``."""
        self.instruments.interaction.labels(page, kind).observe(seconds)

    def observe_page_switch(self, page: str, seconds: float) -> None:
        """A full run that showed ``page`` after another page in the same tab."""
        self.instruments.page_switch.labels(page).observe(seconds)

    def count_error(self, kind: str) -> None:
        """One error reported with an error id; ``kind`` is the exception's type name."""
        self.instruments.errors.labels(kind).inc()

    def transaction_retried(self, kind: str) -> None:
        """``run_tx`` will try again after a transient failure of ``kind`` (busy, deadlock...)."""
        self.instruments.retries.labels(kind).inc()

    def transaction_ended(self, seconds: float, error: BaseException | None) -> None:
        """``run_tx`` returned (committed), failed with a database error, or its function
        raised (aborted: a conflict, a refused input; the database did not fail)."""
        if error is None:
            outcome = "committed"
        elif isinstance(error, DatabaseError):
            outcome = "failed"
            self.instruments.failures.labels(type(error).__name__).inc()
        else:
            outcome = "aborted"
        self.instruments.transaction.labels(outcome).observe(seconds)

    def observe_job(self, status: str, seconds: float) -> None:
        """One attempt of a job ran for ``seconds`` and ended as ``status``."""
        self.instruments.job.labels(status).observe(seconds)

    def session_opened(self) -> None:
        """A browser tab connected to this process."""
        self.instruments.sessions().inc()

    def session_closed(self) -> None:
        """A browser tab disconnected from this process."""
        self.instruments.sessions().dec()

    # --- what is read at scrape time -------------------------------------------------------

    def watch_cache(self, cache: Cache) -> None:
        """Expose ``cache``'s counters."""
        self.registry.register(CacheCollector(cache))

    def watch_jobs(self, read: Callable[[], JobCounts], *, ttl_s: float = JOBS_READ_TTL_S) -> None:
        """Expose the jobs per status that ``read`` counts (at most once per ``ttl_s``)."""
        self.registry.register(JobsCollector(read, ttl_s=ttl_s))

    def count_errors(self) -> None:
        """Count ``log_error``'s reports from now on (this Metrics only, not an earlier one)."""
        logger = logging.getLogger(ERRORS_LOGGER)
        for handler in list(logger.handlers):
            if isinstance(handler, ErrorCounter):
                logger.removeHandler(handler)
        self._error_counter = ErrorCounter(self.count_error)
        logger.addHandler(self._error_counter)

    def active_sessions(self) -> float:
        """Browser tabs connected now: this process's, or with files every live process's."""
        if self.multiprocess_dir is None:
            gauges: Iterable[Metric] = self.instruments.sessions().collect()
        else:
            # Only the files' collector: the registry's others (jobs, readiness) do I/O.
            files = MultiProcessCollector(  # type: ignore[no-untyped-call]
                None, path=str(self.multiprocess_dir)
            )
            gauges = files.collect()  # type: ignore[no-untyped-call]
        return sum(
            s.value
            for family in gauges
            for s in family.samples
            if s.name == "stalwart_active_sessions"
        )

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)

    def close(self) -> None:
        """Stop counting errors; in multiprocess mode, drop this process's live gauges."""
        if self._error_counter is not None:
            logging.getLogger(ERRORS_LOGGER).removeHandler(self._error_counter)
            self._error_counter = None
        if self.multiprocess_dir is not None:
            mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), str(self.multiprocess_dir)
            )


def metrics_directory(cfg: AppConfig) -> Path | None:
    """Where every process writes its metrics, if they share them (multiprocess mode)."""
    # prometheus_client itself switches to files at import when PROMETHEUS_MULTIPROC_DIR is
    # set, so that variable alone must mean multiprocess mode too.
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return cfg.metrics_dir or (Path(env) if env else None)


def _process_instruments(directory: Path) -> Instruments:
    """This process's metric objects, writing to ``directory`` (switching to files once)."""
    directory = directory.resolve()
    with _process_lock:
        existing = _PROCESS_INSTRUMENTS.get(str(directory))
        if existing is not None:
            return existing
        if _PROCESS_INSTRUMENTS:
            raise ConfigError(
                f"this process already writes its metrics to {next(iter(_PROCESS_INSTRUMENTS))}",
                "Use one STALWART_METRICS_DIR per process (and per installation).",
            )
        _write_values_to(directory)
        instruments = Instruments(None)
        _PROCESS_INSTRUMENTS[str(directory)] = instruments
        return instruments


def _write_values_to(directory: Path) -> None:
    """Make every metric created from now on in this process keep its value in ``directory``.

    prometheus_client picks the value class once, at import, from ``PROMETHEUS_MULTIPROC_DIR``;
    a directory set only in Stalwart's settings is handed to it here (children inherit it).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"metrics directory {directory} cannot be created: {err}",
            "Set STALWART_METRICS_DIR to a writable directory (a tmpfs such as /dev/shm/...).",
        ) from err
    current = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    already_files = values.ValueClass is not values.MutexValue
    if already_files and current and Path(current).resolve() != directory:
        raise ConfigError(
            f"metrics directory {directory} differs from PROMETHEUS_MULTIPROC_DIR={current}",
            "Set only one of STALWART_METRICS_DIR and PROMETHEUS_MULTIPROC_DIR, or both alike.",
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not already_files:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
