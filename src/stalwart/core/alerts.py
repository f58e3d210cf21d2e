"""The embedded alert dispatcher: Prometheus's alert rules, evaluated in this process, posted
to a webhook. For single-machine installs that run no Prometheus/Alertmanager.

Every ``interval_s`` the dispatcher reads what this process knows (the readiness report, the
metrics registry, the jobs table) into an ``AlertState`` and asks each ``AlertRule`` whether
its condition holds. A condition that holds for the rule's ``for_s`` becomes an incident: one
``firing`` message is posted, however many evaluations it lasts; when it stops holding, one
``resolved`` message. A message the webhook did not take (after retries with backoff) stays in
an outbox and is sent again at the next evaluation, so an outage of the receiver delays
messages but loses none (up to ``OUTBOX_MAX``). Nothing here raises into the app: a failing
evaluation or post is logged (``log_error``) and the loop goes on.

The rules mirror ``docker/prometheus/alerts.yml`` (same names, thresholds and runbooks).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from prometheus_client.registry import CollectorRegistry
from sqlalchemy import func, select
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stalwart import __version__
from stalwart.core.database import DB
from stalwart.core.health import CheckResult, HealthReport
from stalwart.core.logs import get_logger, log_error, traceparent
from stalwart.errors import StalwartError
from stalwart.models.job import JobRecord

log = get_logger(__name__)

Severity = Literal["warning", "critical"]
#: where each alert's runbook is (an anchor per alert in OPERATIONS.md)
RUNBOOK_BASE: Final = "OPERATIONS.md#alert-"
#: messages kept for a webhook that does not answer; older ones are dropped beyond this
OUTBOX_MAX: Final = 100
#: how far back the metrics windows of the rules reach
WINDOW_S: Final = 300.0

# Thresholds shared with docker/prometheus/alerts.yml.
INTERACTION_P95_S: Final = 0.050
INTERACTION_MIN_COUNT: Final = 20
ERROR_RATIO: Final = 0.02
ERROR_MIN_COUNT: Final = 5
JOB_FAILURE_RATIO: Final = 0.10
JOB_FAILURE_MIN: Final = 3
JOB_WINDOW_S: Final = 900.0
JOB_QUEUE_AGE_S: Final = 600.0
DB_RETRIES_PER_WINDOW: Final = 50
BACKUP_MAX_AGE_S: Final = 26 * 3600.0
DISK_WARNING_FACTOR: Final = 2.0


class WebhookError(StalwartError):
    """The alert webhook did not take a message."""

    default_action = (
        "Check STALWART_ALERT_WEBHOOK_URL and the receiver; the message is kept and sent again "
        "at the next evaluation."
    )


# --- what an evaluation sees ---------------------------------------------------------------------


Sample = tuple[str, tuple[tuple[str, str], ...]]


class MetricWindow:
    """Snapshots of the registry's samples, so rules can ask for increases over a window."""

    def __init__(self, registry: CollectorRegistry | None, window_s: float = WINDOW_S) -> None:
        self.registry = registry
        self.window_s = window_s
        self._snapshots: deque[tuple[float, dict[Sample, float]]] = deque()

    def take(self, now: float) -> None:
        """Read every sample of the registry now, and forget snapshots older than the window."""
        if self.registry is None:
            return
        snapshot: dict[Sample, float] = {}
        for family in self.registry.collect():
            for s in family.samples:
                snapshot[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        self._snapshots.append((now, snapshot))
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - self.window_s:
            self._snapshots.popleft()

    def value(self, name: str, **labels: str) -> float | None:
        """The latest sum of ``name`` over the samples matching ``labels`` (None: no sample)."""
        if not self._snapshots:
            return None
        return _sum(self._snapshots[-1][1], name, labels)

    def increase(self, name: str, **labels: str) -> float | None:
        """How much ``name`` (summed) grew over the window (None: no sample, or one snapshot)."""
        if len(self._snapshots) < 2:
            return None
        now = _sum(self._snapshots[-1][1], name, labels)
        then = _sum(self._snapshots[0][1], name, labels)
        if now is None:
            return None
        return max(0.0, now - (then or 0.0))

    def quantile(self, q: float, histogram: str) -> tuple[float, float] | None:
        """(q-quantile, count) of ``histogram``'s observations over the window, summed over
        its labels, interpolated within buckets as PromQL's histogram_quantile does."""
        if len(self._snapshots) < 2:
            return None
        bounds: dict[float, float] = {}
        first, last = self._snapshots[0][1], self._snapshots[-1][1]
        for (name, labels), value in last.items():
            if name != f"{histogram}_bucket":
                continue
            le = float(dict(labels)["le"])
            bounds[le] = bounds.get(le, 0.0) + value - first.get((name, labels), 0.0)
        if not bounds:
            return None
        edges = sorted(bounds)
        total = bounds[edges[-1]]
        if total <= 0:
            return None
        rank, lower, below = q * total, 0.0, 0.0
        for edge in edges:
            if bounds[edge] >= rank:
                if edge == float("inf"):
                    return lower, total
                share = (rank - below) / (bounds[edge] - below) if bounds[edge] > below else 1.0
                return lower + (edge - lower) * share, total
            lower, below = edge, bounds[edge]
        return lower, total


def _sum(snapshot: Mapping[Sample, float], name: str, labels: Mapping[str, str]) -> float | None:
    found = [
        v
        for (n, ls), v in snapshot.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    ]
    return sum(found) if found else None


@dataclass(frozen=True)
class JobStats:
    """What the jobs table says about the recent past."""

    failed: int
    succeeded: int
    oldest_queued_s: float | None


def read_job_stats(db: DB, *, window_s: float = JOB_WINDOW_S) -> JobStats:
    """Jobs finished in the last ``window_s`` by outcome, and the age of the oldest queued one."""
    since = datetime.now(UTC) - timedelta(seconds=window_s)
    with db.get_conn() as conn:
        rows = conn.execute(
            select(JobRecord.status, func.count())
            .where(JobRecord.finished_at >= since)
            .where(JobRecord.status.in_(("failed", "succeeded")))
            .group_by(JobRecord.status)
        ).all()
        oldest = conn.execute(
            select(func.min(JobRecord.queued_at)).where(JobRecord.status == "queued")
        ).scalar_one()
    counts = {str(status): int(n) for status, n in rows}
    age = None
    if oldest is not None:
        queued = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age = max(0.0, (datetime.now(UTC) - queued).total_seconds())
    return JobStats(counts.get("failed", 0), counts.get("succeeded", 0), age)


@dataclass
class AlertState:
    """Everything the rules look at in one evaluation; a part that could not be read is None."""

    report: HealthReport | None = None
    metrics: MetricWindow | None = None
    jobs: JobStats | None = None
    free_bytes: int | None = None
    min_free_bytes: int = 0


# --- the rules -----------------------------------------------------------------------------------


Condition = Callable[[AlertState], str | None]


@dataclass(frozen=True)
class AlertRule:
    """An alert: a condition that returns a description while it holds (None otherwise)."""

    name: str
    severity: Severity
    summary: str
    remediation: str
    condition: Condition
    #: the condition must hold this long before the alert fires (Prometheus's ``for``)
    for_s: float = 0.0

    @property
    def runbook(self) -> str:
        """The runbook's address: OPERATIONS.md's anchor for this alert."""
        return f"{RUNBOOK_BASE}{self.name.lower()}"


def _readiness(state: AlertState) -> str | None:
    if state.report is None or state.report.ready:
        return None
    return f"Readiness checks failing: {_checks(state.report.critical_failures)}."


def _degraded(state: AlertState) -> str | None:
    if state.report is None or not state.report.degraded:
        return None
    return (
        "Non-critical checks failing (the app stays ready, slower or later): "
        f"{_checks(state.report.degraded)}."
    )


def _checks(results: Sequence[CheckResult]) -> str:
    """Failed checks as a description names them: each with its error type and id."""
    return ", ".join(f"{r.name} ({r.error}, error id {r.error_id})" for r in results)


def _disk(factor: float) -> Condition:
    def condition(state: AlertState) -> str | None:
        if state.free_bytes is None or state.min_free_bytes <= 0:
            return None
        if state.free_bytes < state.min_free_bytes * factor:
            return (
                f"{state.free_bytes / 1024**2:.0f} MiB free on the data directory; the app "
                f"stops being ready below {state.min_free_bytes / 1024**2:.0f} MiB."
            )
        return None

    return condition


def _interaction_p95(state: AlertState) -> str | None:
    found = state.metrics.quantile(0.95, "stalwart_interaction_seconds") if state.metrics else None
    if found is None:
        return None
    p95, count = found
    if count >= INTERACTION_MIN_COUNT and p95 > INTERACTION_P95_S:
        return f"p95 of {count:.0f} interactions is {p95 * 1000:.0f} ms (budget 50 ms)."
    return None


def _error_rate(state: AlertState) -> str | None:
    if state.metrics is None:
        return None
    # Per interaction, and only with traffic: errors of the readiness probes during an outage
    # are ReadinessFailing's business, not a rate of failing user actions.
    errors = state.metrics.increase("stalwart_errors_total")
    runs = state.metrics.increase("stalwart_interaction_seconds_count")
    if not errors or errors < ERROR_MIN_COUNT or not runs or runs < INTERACTION_MIN_COUNT:
        return None
    if errors / runs <= ERROR_RATIO:
        return None
    return (
        f"{errors:.0f} errors in the last {WINDOW_S / 60:.0f} min "
        f"({errors / runs:.1%} of {runs:.0f} interactions)."
    )


def _job_failures(state: AlertState) -> str | None:
    jobs = state.jobs
    if jobs is None or jobs.failed < JOB_FAILURE_MIN:
        return None
    ratio = jobs.failed / (jobs.failed + jobs.succeeded)
    if ratio > JOB_FAILURE_RATIO:
        return (
            f"{jobs.failed} of {jobs.failed + jobs.succeeded} jobs finished in the last "
            f"{JOB_WINDOW_S / 60:.0f} min failed ({ratio:.0%})."
        )
    return None


def _queue_age(state: AlertState) -> str | None:
    age = state.jobs.oldest_queued_s if state.jobs else None
    if age is not None and age > JOB_QUEUE_AGE_S:
        return f"The oldest queued job has waited {age / 60:.0f} min."
    return None


def _db_retries(state: AlertState) -> str | None:
    retries = state.metrics.increase("stalwart_db_retries_total") if state.metrics else None
    if retries is not None and retries > DB_RETRIES_PER_WINDOW:
        return f"{retries:.0f} transaction retries in the last {WINDOW_S / 60:.0f} min."
    return None


def _backup_age(state: AlertState) -> str | None:
    age = state.metrics.value("stalwart_backup_age_seconds") if state.metrics else None
    if age is not None and age > BACKUP_MAX_AGE_S:
        return f"The newest verified backup is {age / 3600:.1f} h old."
    return None


def _restore_drill(state: AlertState) -> str | None:
    ok = state.metrics.value("stalwart_restore_drill_ok") if state.metrics else None
    if ok is not None and ok < 1:
        return "The last restore drill failed."
    return None


def default_rules() -> tuple[AlertRule, ...]:
    """The rules of ``docker/prometheus/alerts.yml``, for the embedded dispatcher."""
    return (
        AlertRule(
            "ReadinessFailing",
            "critical",
            "Stalwart is not ready: a dependency check fails",
            "Run `app health` for the failing check and its error id; see the runbook.",
            _readiness,
            for_s=60,
        ),
        AlertRule(
            "DependencyDegraded",
            "warning",
            "A non-critical dependency fails: the app runs degraded",
            "Run `app health` for the check's error id; bring its Redis back.",
            _degraded,
            for_s=300,
        ),
        AlertRule(
            "DiskSpaceCritical",
            "critical",
            "The data directory is below its free-space threshold",
            "Free space on the data volume (old backups, logs) or grow it.",
            _disk(1.0),
            for_s=0,
        ),
        AlertRule(
            "DiskSpaceLow",
            "warning",
            "The data directory is getting full",
            "Free space on the data volume or grow it before the app stops being ready.",
            _disk(DISK_WARNING_FACTOR),
            for_s=600,
        ),
        AlertRule(
            "InteractionLatencyHigh",
            "warning",
            "Interactions are slower than the 50 ms budget (p95)",
            "Find the slow page in the dashboard; check DB latency, cache hit ratio, CPU.",
            _interaction_p95,
            for_s=600,
        ),
        AlertRule(
            "ErrorRateHigh",
            "warning",
            "More than 2% of interactions end in an error",
            "Look up the newest error ids in the logs; compare with the last deployment.",
            _error_rate,
            for_s=300,
        ),
        AlertRule(
            "JobFailureRateHigh",
            "warning",
            "More than 10% of recent jobs failed",
            "Run `app jobs list --status failed`; fix the common error, then retry them.",
            _job_failures,
            for_s=0,
        ),
        AlertRule(
            "JobQueueStuck",
            "warning",
            "Queued jobs are not being picked up",
            "Check that job workers run (embedded: the app; rq: `app jobs worker`).",
            _queue_age,
            for_s=0,
        ),
        AlertRule(
            "DatabaseRetriesSpike",
            "warning",
            "Many database transactions are being retried",
            "Look for lock contention, a failing-over or overloaded database.",
            _db_retries,
            for_s=300,
        ),
        AlertRule(
            "BackupTooOld",
            "critical",
            "No verified backup in the last 26 hours",
            "Check the backup schedule's jobs; run `app backup create` by hand.",
            _backup_age,
            for_s=0,
        ),
        AlertRule(
            "RestoreDrillFailed",
            "critical",
            "The last restore drill failed: backups may not be restorable",
            "Read the drill job's error; run the drill by hand until it passes.",
            _restore_drill,
            for_s=0,
        ),
    )


# --- posting ---------------------------------------------------------------------------------


class WebhookSender:
    """POSTs JSON to a URL, retrying with exponential backoff (tenacity)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s

    def send(self, message: Mapping[str, Any]) -> None:
        """POST ``message``; raise ``WebhookError`` once every attempt failed."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
            retry=retry_if_exception_type(WebhookError),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._post(message)

    def _post(self, message: Mapping[str, Any]) -> None:
        body = json.dumps(message).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s)
            self.url,
            data=body,
            method="POST",
            # traceparent: the receiver's logs can be matched with ours (W3C trace context)
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"stalwart/{__version__}",
                "traceparent": traceparent(),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"The alert webhook answered {exc.code} {exc.reason}.") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise WebhookError(f"The alert webhook could not be reached: {exc}") from exc


Sender = Callable[[Mapping[str, Any]], None]


@dataclass
class Incident:
    """A rule whose condition holds: since when, and whether its firing message went out."""

    rule: AlertRule
    since: datetime
    description: str
    firing: bool = False


@dataclass
class AlertDispatcher:
    """Evaluates ``rules`` against ``read_state()`` every ``interval_s`` and posts transitions."""

    rules: Sequence[AlertRule]
    read_state: Callable[[], AlertState]
    send: Sender
    interval_s: float = 30.0
    #: named in every message, so a receiver of several installs can tell them apart
    instance: str = field(default_factory=socket.gethostname)
    _incidents: dict[str, Incident] = field(default_factory=dict, init=False)
    _outbox: deque[dict[str, Any]] = field(default_factory=deque, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    @property
    def firing(self) -> list[str]:
        """The names of the alerts firing now."""
        return [name for name, inc in self._incidents.items() if inc.firing]

    @property
    def pending_messages(self) -> int:
        """Messages waiting for the webhook to take them."""
        return len(self._outbox)

    def evaluate(self) -> None:
        """One evaluation: read the state, update incidents, send what changed. Never raises."""
        try:
            state = self.read_state()
        except Exception as err:
            log_error(err, {"component": "alerts", "step": "read state"})
            return
        now = datetime.now(UTC)
        for rule in self.rules:
            try:
                description = rule.condition(state)
            except Exception as err:  # one broken rule must not silence the others
                log_error(err, {"component": "alerts", "alert": rule.name})
                continue
            self._advance(rule, description, now)
        self._flush()

    def _advance(self, rule: AlertRule, description: str | None, now: datetime) -> None:
        incident = self._incidents.get(rule.name)
        if description is None:
            if incident is not None:
                del self._incidents[rule.name]
                if incident.firing:
                    self._queue(incident, "resolved", now)
            return
        if incident is None:
            incident = self._incidents[rule.name] = Incident(rule, now, description)
        incident.description = description
        if not incident.firing and (now - incident.since).total_seconds() >= rule.for_s:
            incident.firing = True
            self._queue(incident, "firing", now)

    def _queue(self, incident: Incident, status: str, now: datetime) -> None:
        rule = incident.rule
        message: dict[str, Any] = {
            "alert": rule.name,
            "status": status,
            "severity": rule.severity,
            "summary": rule.summary,
            "description": incident.description,
            "remediation": rule.remediation,
            "runbook": rule.runbook,
            "started_at": incident.since.isoformat(),
            "instance": self.instance,
            "version": __version__,
        }
        if status == "resolved":
            message["resolved_at"] = now.isoformat()
        log.warning(
            "alert " + status,
            alert=rule.name,
            severity=rule.severity,
            description=incident.description,
        )
        self._outbox.append(message)
        while len(self._outbox) > OUTBOX_MAX:
            dropped = self._outbox.popleft()
            log.error("alert message dropped: webhook unreachable", alert=dropped["alert"])

    def _flush(self) -> None:
        while self._outbox:
            message = self._outbox[0]
            try:
                self.send(message)
            except Exception as err:
                log_error(
                    err,
                    {"component": "alerts", "alert": message["alert"], "status": message["status"]},
                )
                return  # in order: the rest waits for the next evaluation
            self._outbox.popleft()

    def start(self) -> None:
        """Evaluate every ``interval_s`` in a daemon thread until ``stop()``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stalwart-alerts", daemon=True)
        self._thread.start()
        log.info("alert dispatcher started", interval_s=self.interval_s, rules=len(self.rules))

    def stop(self) -> None:
        """Stop evaluating (waits for the current evaluation)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate()
            except Exception as err:  # evaluate() logs its own; this is the last line
                log_error(err, {"component": "alerts"})
