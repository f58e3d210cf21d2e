"""Readiness: is every dependency of this process there? The checks behind /readyz and
``app health``.

A check is a function that returns a short detail for operators (``"at head 0004"``) or
raises; ``HealthChecks.run()`` runs every check in a thread of its own, all at once, and waits
for each at most ``timeout_s``, so one hung dependency costs a probe ``timeout_s``, never a hang.
A check still hung from an earlier run is not started again: the next run waits for that same
call, so a dependency that hangs for minutes holds one thread per check, not one per probe.

A failure (a timeout included) is logged through ``log_error``; the report carries the error's
type and id, and the message stays in the log (the HTTP answer is public).

A check is *critical* (the default) or not. A failing critical check makes the process not
ready (/readyz 503: take it out of the load balancer). A failing non-critical one only
*degrades* it (/readyz 200, ``"status": "degraded"``): the cache's Redis (values are computed
uncached meanwhile) and the RQ backend's Redis (jobs are saved and dispatched once it
answers). Those are shared by every replica, so counting them would take all replicas out
at once and turn a slower app into no app.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from stalwart.core.logs import log_error
from stalwart.errors import (
    CacheUnavailableError,
    HealthCheckError,
    HealthCheckTimeoutError,
    JobBackendUnavailableError,
    MigrationError,
    ReadOnlyStorageError,
    StalwartError,
    StorageFullError,
)

if TYPE_CHECKING:
    from stalwart.core.cache import Cache
    from stalwart.core.config import AppConfig
    from stalwart.core.database import DB
    from stalwart.core.job_engines import EmbeddedEngine

Status = Literal["ok", "error", "skipped"]

#: a check's function: returns a detail for operators, or raises why the dependency is not ready
CheckFn = Callable[[], str | None]


class CheckSkipped(Exception):
    """Raised by a check that does not apply to this process (its message says why)."""


@dataclass(frozen=True)
class HealthCheck:
    """One named readiness check."""

    name: str
    fn: CheckFn
    #: False: its failure degrades the process (answers slower or later) but leaves it ready
    critical: bool = True


@dataclass(frozen=True)
class CheckResult:
    """What one check found: ``ok``, ``error`` or ``skipped``, and how long it took."""

    name: str
    status: Status
    latency_ms: float
    #: for operators: what was found (or why the check was skipped); never in /readyz
    detail: str | None = None
    #: the error's type name (e.g. ``DatabaseUnavailableError``), safe to show anyone
    error: str | None = None
    #: the id under which ``log_error`` logged the failure with its stack and message
    error_id: str | None = None
    #: whether a failure makes the process not ready (see the module's docstring)
    critical: bool = True

    def public(self) -> dict[str, Any]:
        """The entry /readyz shows: status, latency, whether it is critical and, on failure,
        the error type and id."""
        entry: dict[str, Any] = {
            "status": self.status,
            "latency_ms": self.latency_ms,
            "critical": self.critical,
        }
        if self.error is not None:
            entry.update(error=self.error, error_id=self.error_id)
        return entry

    def full(self) -> dict[str, Any]:
        """The entry ``app health`` shows: the public one plus the detail."""
        entry = self.public()
        if self.detail is not None:
            entry["detail"] = self.detail
        return entry


@dataclass(frozen=True)
class HealthReport:
    """The results of one run of every check."""

    results: tuple[CheckResult, ...]
    #: time.time() when the run started
    checked_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        """True when no critical check failed (skipped checks do not count)."""
        return not self.critical_failures

    @property
    def failing(self) -> list[CheckResult]:
        """The checks that failed, critical or not."""
        return [r for r in self.results if r.status == "error"]

    @property
    def critical_failures(self) -> list[CheckResult]:
        """The critical checks that failed (why the process is not ready)."""
        return [r for r in self.failing if r.critical]

    @property
    def degraded(self) -> list[CheckResult]:
        """The non-critical checks that failed (the process is ready, but slower or later)."""
        return [r for r in self.failing if not r.critical]

    @property
    def status(self) -> str:
        """``ok``, ``degraded`` (ready, a non-critical check fails) or ``unavailable``."""
        if not self.ready:
            return "unavailable"
        return "degraded" if self.degraded else "ok"

    def get(self, name: str) -> CheckResult | None:
        """The result of the check ``name``, if it ran."""
        return next((r for r in self.results if r.name == name), None)

    def as_dict(self, *, full: bool = False) -> dict[str, Any]:
        """``{"status": "ok"|"degraded"|"unavailable", "checks": {name: entry}}``; ``full``
        adds details."""
        return {
            "status": self.status,
            "checks": {r.name: r.full() if full else r.public() for r in self.results},
        }


class HealthChecks:
    """Runs a fixed set of checks concurrently, each bounded by ``timeout_s``."""

    def __init__(self, checks: Sequence[HealthCheck], *, timeout_s: float = 2.0) -> None:
        self.checks = tuple(checks)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[str | None]] = {}
        self._last: HealthReport | None = None
        #: called with every new report (the metrics collector and the alert dispatcher read it)
        self.listeners: list[Callable[[HealthReport], None]] = []

    def run(self, *, max_age_s: float = 0.0) -> HealthReport:
        """Run every check (or return the last report if it is younger than ``max_age_s``)."""
        last = self._last
        if last is not None and max_age_s > 0 and time.time() - last.checked_at < max_age_s:
            return last
        checked_at = time.time()
        started = time.perf_counter()
        calls = [(check, self._start(check)) for check in self.checks]
        deadline = started + self.timeout_s
        results = tuple(self._finish(check, call, deadline, started) for check, call in calls)
        report = HealthReport(results, checked_at)
        self._last = report
        for listener in list(self.listeners):
            listener(report)
        return report

    @property
    def last(self) -> HealthReport | None:
        """The report of the latest run, if any."""
        return self._last

    def _start(self, check: HealthCheck) -> tuple[Future[str | None], float]:
        with self._lock:
            call = self._inflight.get(check.name)
            if call is not None and not call.done():
                return call, time.perf_counter()  # still hung from an earlier run: wait on it
            call = Future()
            self._inflight[check.name] = call
        begun = time.perf_counter()
        thread = threading.Thread(
            target=_run_into, args=(check.fn, call), name=f"health-{check.name}", daemon=True
        )
        thread.start()
        return call, begun

    def _finish(
        self,
        check: HealthCheck,
        call: tuple[Future[str | None], float],
        deadline: float,
        started: float,
    ) -> CheckResult:
        future, begun = call
        try:
            detail = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            err = HealthCheckTimeoutError(
                f"The {check.name} check did not answer within {self.timeout_s:g} s."
            )
            return _failed(check, err, _ms(started))
        except CheckSkipped as skip:
            return CheckResult(
                check.name, "skipped", _ms(begun), detail=str(skip), critical=check.critical
            )
        except Exception as err:
            return _failed(check, err, _ms(begun))
        return CheckResult(check.name, "ok", _ms(begun), detail=detail, critical=check.critical)


def _run_into(fn: CheckFn, future: Future[str | None]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to the waiting run, which reports it
        future.set_exception(exc)


def _failed(check: HealthCheck, err: BaseException, latency_ms: float) -> CheckResult:
    # The message may hold host names and paths: it goes to the log, the report gets an id.
    error_id = log_error(err, {"check": check.name, "critical": check.critical})
    return CheckResult(
        check.name,
        "error",
        latency_ms,
        detail=err.message if isinstance(err, StalwartError) else str(err),
        error=type(err).__name__,
        error_id=error_id,
        critical=check.critical,
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


# --- the checks -------------------------------------------------------------------------------


def database_check(db: DB) -> HealthCheck:
    """One round trip (``SELECT 1``) to the database."""

    def check() -> str:
        return f"{db.dialect}, round trip {db.check():.1f} ms"

    return HealthCheck("database", check)


def migrations_check(db: DB) -> HealthCheck:
    """The schema is at the newest revision this code knows (no more, no less)."""

    def check() -> str:
        from stalwart.core.migrations import current_revision, head_revision

        current, head = current_revision(db), head_revision()
        if current != head:
            raise MigrationError(
                f"The database schema is at revision {current or 'none (empty)'}, "
                f"the code expects {head}.",
                "Run `app db migrate` (or start one app process with "
                "STALWART_MIGRATE_ON_START=true); if the database is newer than the code, "
                "deploy the newer version.",
            )
        return f"at head {head}"

    return HealthCheck("migrations", check)


#: the file the filesystem check writes and removes (one per process, so checks never clash)
PROBE_PREFIX: Final = ".stalwart-health-"


def filesystem_check(directory: Path, min_free_bytes: int) -> HealthCheck:
    """``directory`` (the data directory) takes a write and has ``min_free_bytes`` free."""

    def check() -> str:
        probe = directory / f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageFullError(f"The data directory {directory} is full: {exc}") from exc
            raise ReadOnlyStorageError(
                f"The data directory {directory} cannot be written: {exc}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
        free = free_bytes(directory)
        if free < min_free_bytes:
            raise StorageFullError(
                f"The data directory {directory} has {free} bytes free, less than "
                f"STALWART_MIN_FREE_BYTES ({min_free_bytes})."
            )
        return f"{directory}: writable, {free / 1024**3:.2f} GiB free"

    return HealthCheck("filesystem", check)


def free_bytes(directory: Path) -> int:
    """Bytes free for this user on the filesystem of ``directory``."""
    try:
        return shutil.disk_usage(directory).free
    except FileNotFoundError as exc:
        raise HealthCheckError(
            f"The data directory {directory} does not exist.",
            "Create it, or point STALWART_DATA_DIR at the data volume.",
        ) from exc


def cache_check(cache: Cache) -> HealthCheck:
    """The cache's backend answers (Redis: a PING; memory: always). Not critical: without
    its Redis every value is computed uncached."""

    def check() -> str:
        try:
            cache.check()
        except Exception as exc:
            raise CacheUnavailableError(
                f"The {cache.backend.name} cache does not answer: {exc}"
            ) from exc
        return cache.backend.name

    return HealthCheck("cache", check, critical=False)


def job_backend_check(cfg: AppConfig, engine: Callable[[], EmbeddedEngine | None]) -> HealthCheck:
    """rq: Redis answers (and how many workers serve the queue); not critical, as enqueued jobs
    are saved and dispatched once it answers. embedded: this process's worker threads and
    sweeper are alive (skipped in a process that runs no workers); critical, as it concerns
    this process alone (a restart brings them back)."""
    if cfg.jobs_engine == "rq":
        from redis import Redis
        from rq import Queue, Worker

        redis = Redis.from_url(
            cfg.redis_url.get_secret_value(), socket_connect_timeout=2, socket_timeout=2
        )
        queue = Queue(cfg.jobs_queue, connection=redis)

        def check_rq() -> str:
            try:
                redis.ping()
                workers = Worker.count(queue=queue)
            except RedisError as exc:
                raise JobBackendUnavailableError(f"Redis does not answer: {exc}") from exc
            return f"rq: Redis answers, {workers} worker(s) on queue {cfg.jobs_queue!r}"

        return HealthCheck("jobs", check_rq, critical=False)

    def check_embedded() -> str:
        running = engine()
        if running is None:
            raise CheckSkipped(
                "embedded: this process runs no job workers (STALWART_JOBS_WORKERS=0, or a "
                "command line); the app processes run them"
            )
        if not running.alive:
            raise JobBackendUnavailableError(
                "The embedded job engine of this process has stopped (a worker thread or the "
                "sweeper is not running).",
                "Restart the app process; its log says why the thread ended. Jobs wait in "
                "the table meanwhile.",
            )
        return f"embedded: {running.workers} worker(s), {running.running} running"

    return HealthCheck("jobs", check_embedded)


def run_checks(*checks: HealthCheck, timeout_s: float = 2.0) -> HealthReport:
    """Run ``checks`` once (for tests and one-off commands)."""
    return HealthChecks(checks, timeout_s=timeout_s).run()


# --- metrics -----------------------------------------------------------------------------------


class HealthCollector(Collector):
    """Readiness as gauges, from a run at most ``max_age_s`` old (a scrape may run the checks).

    ``stalwart_ready``, ``stalwart_health_check_ok{check}``,
    ``stalwart_health_check_latency_seconds{check}``, and the data directory's free bytes and
    threshold (so that a disk-space alert can fire before readiness fails).
    """

    def __init__(
        self,
        checks: HealthChecks,
        directory: Path,
        min_free_bytes: int,
        *,
        max_age_s: float = 5.0,
    ) -> None:
        self.checks = checks
        self.directory = directory
        self.min_free_bytes = min_free_bytes
        self.max_age_s = max_age_s

    def collect(self) -> Iterator[Metric]:
        """The gauges of the latest report (running the checks if it is too old)."""
        report = self.checks.run(max_age_s=self.max_age_s)
        ready = GaugeMetricFamily(
            "stalwart_ready",
            "1 when every critical readiness check passes (what /readyz answers 200 to)",
        )
        ready.add_metric([], 1.0 if report.ready else 0.0)
        yield ready
        ok = GaugeMetricFamily(
            "stalwart_health_check_ok",
            "1 when the readiness check passes (or does not apply here), 0 when it fails; "
            'critical="false": a failure degrades the app but leaves it ready',
            labels=["check", "critical"],
        )
        latency = GaugeMetricFamily(
            "stalwart_health_check_latency_seconds",
            "How long the readiness check took in its latest run",
            labels=["check"],
        )
        for result in report.results:
            ok.add_metric(
                [result.name, "true" if result.critical else "false"],
                0.0 if result.status == "error" else 1.0,
            )
            latency.add_metric([result.name], result.latency_ms / 1000)
        yield ok
        yield latency
        try:
            free: float = free_bytes(self.directory)
        except HealthCheckError:
            free = 0.0
        disk = GaugeMetricFamily(
            "stalwart_data_dir_free_bytes", "Bytes free on the data directory's filesystem"
        )
        disk.add_metric([], free)
        yield disk
        floor = GaugeMetricFamily(
            "stalwart_data_dir_min_free_bytes",
            "STALWART_MIN_FREE_BYTES: below this free space the app is not ready",
        )
        floor.add_metric([], float(self.min_free_bytes))
        yield floor
