"""Metric history without Prometheus: a sampler that writes one row of aggregates per process
every ``STALWART_METRICS_SAMPLE_INTERVAL_S`` into ``metric_samples``, for the System page.

Each sample reads this process's own metric objects (``Metrics.instruments``; in multiprocess
mode too, where a scrape would add up every process) and stores what they grew by since the
previous sample: interactions and their p95 (interpolated within the histogram's buckets, as
PromQL's ``histogram_quantile`` does, from the buckets' increases), page switches, errors,
transactions, retries, failures, job attempts, and the sessions connected now. So summing the
rows of one interval over the instances gives the installation's totals.

A sample that cannot be written (the database is down) is not lost: the previous reading is
kept, and the next sample covers both intervals. Every sample also deletes the rows of
``metric_samples`` and ``error_reports`` older than ``STALWART_HISTORY_RETENTION_DAYS``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, insert

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger, log_error
from stalwart.core.metrics import Instruments
from stalwart.models.base import utcnow
from stalwart.models.system import ErrorReport, MetricSample

log = get_logger(__name__)

#: the quantile of interaction latency each sample stores
P95: Final = 0.95


def instance_name() -> str:
    """``host:pid``: which process wrote a sample or reported an error."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


@dataclass(frozen=True)
class Reading:
    """This process's cumulative values at one moment."""

    #: column -> cumulative count
    counts: Mapping[str, float]
    #: interaction histogram: upper bound -> cumulative count of observations at or below
    buckets: Mapping[float, float]
    sessions: float
    at: float = field(default_factory=time.monotonic)


def _samples(metric: Any) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in metric.collect():
        for s in family.samples:
            yield s.name, s.labels, float(s.value)


def _total(metric: Any, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in _samples(metric)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def read_instruments(instruments: Instruments) -> Reading:
    """What this process's metric objects hold now (summed over their labels)."""
    buckets: dict[float, float] = {}
    for name, labels, value in _samples(instruments.interaction):
        if name == "stalwart_interaction_seconds_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    counts = {
        "interactions": _total(instruments.interaction, "stalwart_interaction_seconds_count"),
        "page_switches": _total(instruments.page_switch, "stalwart_page_switch_seconds_count"),
        "errors": _total(instruments.errors, "stalwart_errors_total"),
        "transactions": _total(instruments.transaction, "stalwart_db_transaction_seconds_count"),
        "db_retries": _total(instruments.retries, "stalwart_db_retries_total"),
        "db_failures": _total(instruments.failures, "stalwart_db_failures_total"),
        "jobs_run": _total(instruments.job, "stalwart_job_duration_seconds_count"),
        "jobs_failed": _total(
            instruments.job, "stalwart_job_duration_seconds_count", status="failed"
        ),
    }
    sessions = _total(instruments.sessions(), "stalwart_active_sessions")
    return Reading(counts, buckets, sessions)


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q``-quantile of observations counted in cumulative ``buckets`` (upper bound ->
    count at or below it), interpolated linearly within a bucket; None without observations.
    Above the highest finite bound, that bound is the answer (as in PromQL)."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    total = buckets[edges[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for edge in edges:
        if buckets[edge] >= rank:
            if edge == float("inf"):
                return lower
            share = (rank - below) / (buckets[edge] - below) if buckets[edge] > below else 1.0
            return lower + (edge - lower) * share
        lower, below = edge, buckets[edge]
    return lower


def sample_row(before: Reading | None, now: Reading) -> dict[str, Any]:
    """The ``metric_samples`` values for the interval from ``before`` (None: the process's
    start) to ``now``: increases of the counters, p95 of the interactions, sessions now."""

    def grew(then: float | None, value: float) -> float:
        return max(0.0, value - (then or 0.0))

    row: dict[str, Any] = {
        column: round(grew(before.counts.get(column) if before else None, value))
        for column, value in now.counts.items()
    }
    deltas = {
        le: grew(before.buckets.get(le) if before else None, value)
        for le, value in now.buckets.items()
    }
    row["interaction_p95_s"] = bucket_quantile(P95, deltas) if row["interactions"] else None
    row["sessions"] = max(0, round(now.sessions))
    return row


class MetricSampler:
    """Writes this process's metric increases to ``metric_samples`` every ``interval_s``."""

    def __init__(
        self,
        db: DB,
        instruments: Instruments,
        *,
        interval_s: float,
        retention: timedelta,
        instance: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.instruments = instruments
        self.interval_s = interval_s
        self.retention = retention
        self.instance = instance or instance_name()
        self.clock = clock
        self._last: Reading | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, Any]:
        """Write one sample (and prune old rows); return the row written. Raises on a
        database failure, keeping the previous reading so that nothing is lost."""
        now = read_instruments(self.instruments)
        previous_at = self._last.at if self._last is not None else self._started
        row = sample_row(self._last, now)
        row.update(
            ts=self.clock(),
            instance=self.instance,
            interval_s=max(0.0, now.at - previous_at),
        )
        cutoff = row["ts"] - self.retention

        def write(uow: UnitOfWork) -> None:
            uow.session.execute(insert(MetricSample), [row])
            uow.session.execute(delete(MetricSample).where(MetricSample.ts < cutoff))
            uow.session.execute(delete(ErrorReport).where(ErrorReport.ts < cutoff))

        self.db.run_tx(write)
        self._last = now
        return row

    def start(self) -> None:
        """Sample every ``interval_s`` in a daemon thread until ``stop()``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stalwart-sampler", daemon=True)
        self._thread.start()
        log.info("metric sampler started", interval_s=self.interval_s)

    def stop(self, *, final: bool = True) -> None:
        """Stop sampling (waits for the current sample); with ``final``, write one more sample
        so that the interval up to a restart is not lost."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=30)
        self._thread = None
        if final:
            try:
                self.sample()
            except Exception as err:  # stopping must go on; the log line says what was lost
                log.warning("last metric sample not written", error=f"{type(err).__name__}: {err}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as err:  # the next sample covers this interval too
                log_error(err, {"component": "metric sampler"})
