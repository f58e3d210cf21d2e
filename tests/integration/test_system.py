"""The System page's history on real databases: the metric sampler's rows match what a real
``Metrics`` observed and old rows are pruned; ``log_error``'s reports are stored masked, with
their trace id, off the caller's path; the service folds samples and refuses non-admins."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from stalwart.core.access import AccessControl
from stalwart.core.database import DB
from stalwart.core.error_reports import (
    MAX_CONTEXT_CHARS,
    ErrorReportSink,
    install_error_reports,
    report_row,
)
from stalwart.core.logs import configure_logging, log_error, trace
from stalwart.core.metric_history import MetricSampler, bucket_quantile
from stalwart.core.metrics import Metrics
from stalwart.core.rbac import DEFAULT_ROLES
from stalwart.errors import DatabaseError, PermissionDeniedError
from stalwart.models import ErrorReport, MetricSample
from stalwart.models.base import utcnow
from stalwart.services.system_service import SystemService, fold_samples
from tests.conftest import PYTHON, child_env, viewer

ADMIN = DEFAULT_ROLES.principal(user_id=1, username="root", role="admin")
RETENTION = timedelta(days=14)


def samples(db: DB) -> list[MetricSample]:
    with db.unit_of_work(read_only=True) as uow:
        rows = list(uow.session.execute(select(MetricSample).order_by(MetricSample.id)).scalars())
        uow.session.expunge_all()
    return rows


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    made = Metrics()
    yield made
    made.close()


def test_each_sample_stores_what_the_metrics_grew_by_since_the_previous_one(
    db: DB, metrics: Metrics
) -> None:
    sampler = MetricSampler(
        db, metrics.instruments, interval_s=60, retention=RETENTION, instance="host-a:1"
    )
    for _ in range(8):
        metrics.observe_interaction("home", "full", 0.004)  # bucket (2.5 ms, 5 ms]
    for _ in range(2):
        metrics.observe_interaction("form-demo", "fragment", 0.2)  # bucket (100 ms, 250 ms]
    metrics.observe_page_switch("form-demo", 0.01)
    for kind in ("ValueError", "ValueError", "DatabaseError"):
        metrics.count_error(kind)
    metrics.transaction_retried("busy")
    metrics.transaction_retried("deadlock")
    metrics.transaction_ended(0.01, None)
    metrics.observe_job("succeeded", 1.0)
    metrics.observe_job("failed", 2.0)
    metrics.session_opened()
    metrics.session_opened()

    sampler.sample()
    for _ in range(5):
        metrics.observe_interaction("home", "full", 0.002)  # bucket (1 ms, 2.5 ms]
    metrics.session_closed()
    sampler.sample()
    sampler.sample()  # nothing happened since

    first, second, third = samples(db)
    assert (first.instance, first.interactions, first.page_switches) == ("host-a:1", 10, 1)
    assert (first.errors, first.db_retries, first.transactions) == (3, 2, 1)
    assert (first.jobs_run, first.jobs_failed, first.sessions) == (2, 1, 2)
    # rank 9.5 of 10: 8 observations up to 5 ms, the 9th and 10th in (100, 250] ms
    assert first.interaction_p95_s == pytest.approx(0.1 + 0.15 * (9.5 - 8) / 2)
    assert (second.interactions, second.errors, second.db_retries, second.sessions) == (5, 0, 0, 1)
    assert second.interaction_p95_s == pytest.approx(0.001 + 0.0015 * 4.75 / 5)
    assert (third.interactions, third.interaction_p95_s, third.sessions) == (0, None, 1)
    assert first.ts <= second.ts <= third.ts


def test_a_sample_prunes_samples_and_error_reports_past_the_retention(
    db: DB, metrics: Metrics
) -> None:
    old, recent = utcnow() - RETENTION - timedelta(hours=1), utcnow() - timedelta(days=1)

    def seed(uow: object) -> None:
        session = uow.session  # type: ignore[attr-defined]
        for ts in (old, recent):
            session.add(
                MetricSample(
                    ts=ts,
                    instance="gone:1",
                    interval_s=60.0,
                    interactions=1,
                    interaction_p95_s=0.01,
                    page_switches=0,
                    errors=0,
                    transactions=0,
                    db_retries=0,
                    db_failures=0,
                    jobs_run=0,
                    jobs_failed=0,
                    sessions=0,
                )
            )
            session.add(
                ErrorReport(
                    error_id=f"e{ts:%d%H}",
                    ts=ts,
                    error_type="ValueError",
                    message="m",
                    stack="s",
                    context={},
                    trace_id=None,
                    instance="gone:1",
                )
            )

    db.run_tx(seed)
    MetricSampler(db, metrics.instruments, interval_s=60, retention=RETENTION).sample()

    kept = samples(db)
    assert [s.ts for s in kept[:1]] == [recent]
    assert len(kept) == 2  # the recent one and the new one
    with db.get_conn() as conn:
        reports = conn.execute(select(ErrorReport.ts)).scalars().all()
    assert reports == [recent]


def test_a_failed_sample_is_covered_by_the_next_one(db: DB, metrics: Metrics) -> None:
    sampler = MetricSampler(db, metrics.instruments, interval_s=60, retention=RETENTION)
    metrics.observe_interaction("home", "full", 0.004)
    broken = DB("sqlite:////nonexistent-dir/for/sure/x.db")
    try:
        sampler.db = broken
        with pytest.raises(DatabaseError):  # a file that cannot be created
            sampler.sample()
    finally:
        broken.dispose()
    sampler.db = db
    metrics.observe_interaction("home", "full", 0.004)
    sampler.sample()

    assert [s.interactions for s in samples(db)] == [2]


def test_bucket_quantile_interpolates_like_histogram_quantile() -> None:
    assert bucket_quantile(0.95, {}) is None
    assert bucket_quantile(0.95, {0.1: 0.0, float("inf"): 0.0}) is None
    assert bucket_quantile(0.5, {0.1: 10.0, float("inf"): 10.0}) == pytest.approx(0.05)
    # every observation above the highest bound: the bound is the answer
    assert bucket_quantile(0.95, {0.1: 0.0, 1.0: 0.0, float("inf"): 4.0}) == 1.0


@pytest.fixture
def sink(db: DB) -> Iterator[ErrorReportSink]:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    made = install_error_reports(db)
    assert made is not None
    yield made
    install_error_reports(None)
    configure_logging("INFO", json=True)


def test_log_error_stores_a_masked_report_with_its_trace_id(db: DB, sink: ErrorReportSink) -> None:
    try:
        raise ValueError("no account for ann.smith@example.com")
    except ValueError as err:
        with trace("a" * 32):
            error_id = log_error(err, {"page": "form-demo", "email": "ann.smith@example.com"})
    assert sink.wait_written()

    (report,) = SystemService(db, AccessControl(db)).recent_errors(ADMIN)
    assert report.error_id == error_id
    assert report.error_type == "ValueError"
    assert report.trace_id == "a" * 32
    assert "Traceback" in report.stack
    assert "test_log_error_stores_a_masked_report_with_its_trace_id" in report.stack
    assert report.context["page"] == "form-demo"
    assert None not in report.context.values()
    for text in (report.stack, report.message, str(report.context)):
        assert "ann.smith@example.com" not in text
    # found by the id the user was shown, too
    (same,) = SystemService(db, AccessControl(db)).recent_errors(ADMIN, error_id=error_id)
    assert same.error_id == error_id


def test_the_service_folds_the_processes_samples_per_step() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)

    def sample(minute: int, instance: str, interactions: int, p95: float, sessions: int):  # type: ignore[no-untyped-def]
        return MetricSample(
            ts=since + timedelta(minutes=minute, seconds=30),
            instance=instance,
            interval_s=60.0,
            interactions=interactions,
            interaction_p95_s=p95,
            page_switches=0,
            errors=1,
            transactions=0,
            db_retries=0,
            db_failures=0,
            jobs_run=0,
            jobs_failed=0,
            sessions=sessions,
        )

    points = fold_samples(
        [
            sample(0, "a:1", 10, 0.010, 2),
            sample(1, "a:1", 10, 0.030, 3),
            sample(1, "b:2", 5, 0.020, 4),
            sample(7, "a:1", 1, 0.001, 1),
        ],
        since,
        timedelta(minutes=5),
    )
    assert [(p.ts.minute, p.interactions, p.errors, p.sessions) for p in points] == [
        (0, 25, 3, 7),
        (5, 1, 1, 1),
    ]
    assert [p.interaction_p95_ms for p in points] == [30.0, 1.0]
    assert [p.end.minute for p in points] == [5, 10]


def test_the_service_refuses_a_non_admin(db: DB) -> None:
    service = SystemService(db, AccessControl(db))
    with pytest.raises(PermissionDeniedError):
        service.recent_errors(viewer("vic"))
    with pytest.raises(PermissionDeniedError):
        service.timeline(viewer("vic"), utcnow() - timedelta(hours=1))


SHARING = """
import json, sys
from pathlib import Path
from stalwart.core.metrics import Metrics
from stalwart.core.metric_history import read_instruments, sample_row

metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    metrics.observe_interaction("home", "full", 0.004)
metrics.count_error("ValueError")
metrics.session_opened()
row = sample_row(None, read_instruments(metrics.instruments))
print(json.dumps({"row": row, "sessions_now": metrics.active_sessions()}))
"""


def test_with_shared_metric_files_a_sample_holds_only_its_own_process(tmp_path: Path) -> None:
    def run(count: int) -> dict[str, Any]:
        done = subprocess.run(
            [PYTHON, "-c", SHARING, str(tmp_path / "metrics"), str(count)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    first = run(3)  # leaves its files (and its session: it was not closed)
    second = run(2)

    assert (first["row"]["interactions"], first["row"]["errors"]) == (3, 1)
    assert (second["row"]["interactions"], second["row"]["errors"]) == (2, 1)
    assert second["row"]["sessions"] == 1
    assert second["sessions_now"] == 2  # the page's "sessions now": every process's


def test_report_rows_keep_context_small_and_skip_what_is_not_a_report() -> None:
    assert report_row({"event": "error", "error": "no id"}, "h:1") is None
    row = report_row(
        {"error_id": "abc", "error_type": "E", "stack": "s", "blob": "x" * 10_000}, "h:1"
    )
    assert row is not None
    assert set(row["context"]) == {"truncated"}
    assert len(row["context"]["truncated"]) == MAX_CONTEXT_CHARS


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_backlog_of_reports_drops_the_oldest(db: DB, sink: ErrorReportSink) -> None:
    sink.max_pending = 2
    ids = []
    with db._write_lock:  # SQLite's writer lock: the write-behind thread waits for it
        for n in range(4):
            try:
                raise KeyError(n)
            except KeyError as err:
                ids.append(log_error(err))
    assert sink.wait_written()

    stored = {r.error_id for r in SystemService(db, AccessControl(db)).recent_errors(ADMIN)}
    assert stored == set(ids[2:])
    assert sink.dropped == 2


def test_the_sampler_thread_samples_until_stopped(db: DB, metrics: Metrics) -> None:
    sampler = MetricSampler(db, metrics.instruments, interval_s=0.05, retention=RETENTION)
    metrics.observe_interaction("home", "full", 0.004)
    sampler.start()
    try:
        for _ in range(200):
            if samples(db):
                break
            threading.Event().wait(0.05)
    finally:
        sampler.stop()
    written = samples(db)
    assert len(written) >= 2  # at least one by the thread, and the last one at stop
    assert sum(s.interactions for s in written) == 1
