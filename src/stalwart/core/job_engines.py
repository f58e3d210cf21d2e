"""Job engines: where jobs run. Chosen by ``STALWART_JOBS_ENGINE``; both write the same table.

- ``embedded`` (default): a few threads in the app process (or in ``app jobs worker``) claim
  jobs from the ``jobs`` table, beside a sweeper that reaps jobs whose worker died.
- ``rq``: enqueue also pushes an RQ job onto Redis; RQ workers (``app jobs worker --engine rq``)
  run it through ``run_rq_job``, which claims that row and runs it like the embedded engine
  does. RQ does the queueing, the delays of retries (``enqueue_at``) and the killing of a work
  horse that overruns; the table keeps heartbeats, so a worker SIGKILLed mid-job is reaped by
  the sweeper of another worker and the job is dispatched again.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.worker import BaseWorker
from rq.worker_pool import WorkerPool

from stalwart.core.config import AppConfig, load_config
from stalwart.core.database import DB
from stalwart.core.job_runner import (
    Execution,
    HardStop,
    claim_job,
    claim_next,
    reap_lapsed,
    redispatch_stale,
    run_claimed,
    worker_name,
)
from stalwart.core.jobs import Dispatcher, JobSettings, NoDispatch
from stalwart.core.logs import get_logger
from stalwart.core.metrics import Metrics
from stalwart.errors import JobBackendUnavailableError, StalwartError
from stalwart.models.base import utcnow

log = get_logger(__name__)
#: RQ kills a work horse this long after the job's own timeout and grace (a backstop: our
#: monitor stops the job first).
RQ_KILL_MARGIN_S: Final = 30
#: An RQ worker that lost Redis tries again after this long, doubling up to the maximum.
RQ_RECONNECT_INITIAL_S: Final = 0.5
RQ_RECONNECT_MAX_S: Final = 30.0
#: A dispatch waiting in RQ's queue counts as in flight (not dispatched again by the sweeper)
#: for this many leases, and at least RQ_TRUST_DISPATCH_MIN_S.
RQ_TRUST_DISPATCH_LEASES: Final = 10
RQ_TRUST_DISPATCH_MIN_S: Final = 60.0
_RQ_IN_FLIGHT: Final = frozenset(
    {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED}
)


class Sweeper:
    """A thread that reaps jobs whose worker died (and, for rq, re-dispatches lost ones)."""

    def __init__(
        self, db: DB, settings: JobSettings, dispatcher: Dispatcher, *, redispatch: bool
    ) -> None:
        self.db = db
        self.settings = settings
        self.dispatcher = dispatcher
        self.redispatch = redispatch
        self.interval_s = max(0.05, min(settings.heartbeat_s, settings.lease_s / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping every ``interval_s`` seconds."""
        self._thread = threading.Thread(target=self._loop, name="stalwart-job-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping (waits for the current sweep)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        """True while the sweeping thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def sweep(self) -> list[str]:
        """One pass: the ids of jobs handed to the engine again."""
        again = reap_lapsed(self.db, self.settings, self.dispatcher)
        if self.redispatch:
            again += redispatch_stale(self.db, self.settings, self.dispatcher)
        return again

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except StalwartError as err:
                log.warning("job sweep failed", error=err.message)
            except Exception as err:  # keep sweeping: a dead sweeper means stuck jobs
                log.exception("job sweep crashed", error=str(err))


class EmbeddedEngine:
    """A small pool of threads running jobs from the ``jobs`` table in this process."""

    name = "embedded"

    def __init__(
        self, db: DB, settings: JobSettings, *, workers: int = 2, metrics: Metrics | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.workers = workers
        #: told each run's duration and outcome
        self.metrics = metrics
        self.sweeper = Sweeper(db, settings, self, redispatch=False)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Execution] = {}
        self._lock = threading.Lock()

    def dispatch(
        self, job_id: str, *, timeout_s: float, not_before: datetime | None = None
    ) -> None:
        """Wake the idle workers (a job waiting for its backoff is claimed when due)."""
        self._wake.set()

    def in_flight(self, job_id: str) -> bool:
        """The pool reads the table; it holds no dispatches of its own."""
        return False

    def start(self) -> None:
        """Start the worker threads and the sweeper."""
        self._stopping.clear()
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"stalwart-job-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.sweeper.start()
        log.info("embedded job engine started", workers=self.workers)

    def stop(self, wait_s: float | None = None) -> None:
        """Stop claiming; wait up to ``wait_s`` (default: the cancel grace) for running jobs,
        then give the unfinished ones back to the queue."""
        self._stopping.set()
        self._wake.set()
        self.sweeper.stop()
        deadline = time.monotonic() + (self.settings.cancel_grace_s if wait_s is None else wait_s)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = list(self._running.values())
        for execution in unfinished:
            execution.release()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._threads = [t for t in self._threads if t.is_alive()]
        log.info("embedded job engine stopped", released=len(unfinished))

    @property
    def alive(self) -> bool:
        """True while started, not stopping, and every worker thread and the sweeper run."""
        return (
            not self._stopping.is_set()
            and len(self._threads) == self.workers
            and all(t.is_alive() for t in self._threads)
            and self.sweeper.alive
        )

    @property
    def running(self) -> int:
        """How many jobs this engine is running now."""
        with self._lock:
            return len(self._running)

    def _work(self) -> None:
        worker_id = worker_name()
        while not self._stopping.is_set():
            try:
                claim = claim_next(self.db, worker_id, self.name)
                if claim is None:
                    self._wake.wait(self.settings.poll_interval_s)
                    self._wake.clear()
                    continue
                job_id = claim.job_id

                def track(execution: Execution | None, job_id: str = job_id) -> None:
                    self._track(job_id, execution)

                run_claimed(self.db, claim, self.settings, self, track=track, metrics=self.metrics)
            except HardStop:
                continue  # a hard stop that landed after its job had ended
            except StalwartError as err:
                log.warning("job worker could not reach the database", error=err.message)
                self._stopping.wait(self.settings.poll_interval_s)
            except Exception as err:  # a worker thread must not die of one bad job
                log.exception("job worker error", error=str(err))
                self._stopping.wait(self.settings.poll_interval_s)

    def _track(self, job_id: str, execution: Execution | None) -> None:
        with self._lock:
            if execution is None:
                self._running.pop(job_id, None)
            else:
                self._running[job_id] = execution


# ---------------------------------------------------------------------------------------------
# rq


class RQDispatcher:
    """Pushes a job onto the RQ queue; an RQ worker then runs ``run_rq_job(job_id)``."""

    name = "rq"

    def __init__(self, redis_url: str, queue_name: str, settings: JobSettings) -> None:
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10)
        self.queue = Queue(queue_name, connection=self.redis)
        self.settings = settings

    def dispatch(
        self, job_id: str, *, timeout_s: float, not_before: datetime | None = None
    ) -> None:
        """Enqueue an RQ job for ``job_id`` (at ``not_before`` if that is in the future)."""
        options: dict[str, Any] = {
            "job_timeout": int(timeout_s + self.settings.cancel_grace_s + RQ_KILL_MARGIN_S),
            "result_ttl": 0,  # results live in the jobs table
            "failure_ttl": 86_400,
            "description": f"stalwart job {job_id}",
        }
        # A fresh RQ id per dispatch (an id RQ already holds would be overwritten, and a
        # retry dispatched from inside the running job would lose its RQ job when the running
        # one's result is deleted); the latest one is noted so in_flight can ask about it.
        options["job_id"] = f"stalwart-{job_id}-{uuid.uuid4().hex[:8]}"
        delay_s = 0.0 if not_before is None else (not_before - utcnow()).total_seconds()
        try:
            if not_before is not None and delay_s > 0:
                self.queue.enqueue_at(not_before, run_rq_job, job_id, **options)
            else:
                self.queue.enqueue(run_rq_job, job_id, **options)
            self.redis.set(
                self._dispatch_key(job_id),
                options["job_id"],
                ex=int(max(delay_s, 0.0) + self.trust_dispatch_s) + 1,
            )
        except RedisError as exc:
            raise JobBackendUnavailableError(
                f"Job {job_id} is saved but could not be handed to Redis: {exc}"
            ) from exc

    @property
    def trust_dispatch_s(self) -> float:
        """How long a dispatch still waiting in the queue counts as in flight: a backlog
        longer than this gets one more dispatch per period (harmless, only one claim wins);
        a dispatch lost with Redis's data is noticed within a lease."""
        return max(RQ_TRUST_DISPATCH_LEASES * self.settings.lease_s, RQ_TRUST_DISPATCH_MIN_S)

    def _dispatch_key(self, job_id: str) -> str:
        return f"stalwart:dispatch:{self.queue.name}:{job_id}"

    def in_flight(self, job_id: str) -> bool:
        """True while the latest RQ job dispatched for ``job_id`` is queued, scheduled,
        deferred or started; False if it ended, was lost, or Redis does not answer."""
        try:
            rq_id = self.redis.get(self._dispatch_key(job_id))
            if rq_id is None:
                return False
            if isinstance(rq_id, bytes):
                rq_id = rq_id.decode()
            status = RQJob.fetch(str(rq_id), connection=self.redis).get_status(refresh=False)
        except (RedisError, NoSuchJobError):
            return False
        return status in _RQ_IN_FLIGHT

    def check(self) -> None:
        """Raise ``JobBackendUnavailableError`` unless Redis answers."""
        try:
            self.redis.ping()
        except RedisError as exc:
            raise JobBackendUnavailableError(f"Redis does not answer: {exc}") from exc


def build_dispatcher(cfg: AppConfig, settings: JobSettings | None = None) -> Dispatcher:
    """The dispatcher the settings choose; embedded without a running engine only stores."""
    if cfg.jobs_engine == "rq":
        return RQDispatcher(
            cfg.redis_url.get_secret_value(),
            cfg.jobs_queue,
            settings or JobSettings.from_config(cfg),
        )
    return NoDispatch("embedded")


@dataclass
class _ProcessRuntime:
    pid: int
    db: DB
    settings: JobSettings
    dispatcher: Dispatcher
    metrics: Metrics


_runtime: _ProcessRuntime | None = None
_runtime_lock = threading.Lock()


def _process_runtime() -> _ProcessRuntime:
    # Built per process: an RQ work horse is a fork, and must not share its parent's database
    # connections or locks.
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            cfg = load_config()
            settings = JobSettings.from_config(cfg)
            # With STALWART_METRICS_DIR the work horse's durations and transactions reach the
            # app's /metrics (they share the directory); without it they are not seen.
            metrics = Metrics.from_config(cfg)
            _runtime = _ProcessRuntime(
                os.getpid(),
                DB.from_config(cfg, monitor=metrics),
                settings,
                build_dispatcher(cfg, settings),
                metrics,
            )
        return _runtime


def run_rq_job(job_id: str) -> str | None:
    """What an RQ job runs: claim row ``job_id`` and run it; returns how it ended."""
    runtime = _process_runtime()
    claim = claim_job(runtime.db, job_id, worker_name("rq"), "rq")
    if claim is None:
        # Already run, running elsewhere, cancelled, or not yet due: a duplicate dispatch.
        log.info("rq job has nothing to run", job_id=job_id)
        return None
    try:
        status = run_claimed(
            runtime.db, claim, runtime.settings, runtime.dispatcher, metrics=runtime.metrics
        )
    except HardStop:
        return None
    return status.value if status is not None else None


def run_rq_worker(
    cfg: AppConfig,
    db: DB,
    *,
    concurrency: int = 1,
    burst: bool = False,
    worker_class: type[BaseWorker] = Worker,
) -> None:
    """Run RQ worker(s) on the configured queue until SIGTERM/SIGINT, with a sweeper.

    ``burst`` stops once the queue is empty; ``worker_class`` may be RQ's ``SimpleWorker``
    (runs jobs in this process instead of a forked work horse).
    """
    settings = JobSettings.from_config(cfg)
    dispatcher = RQDispatcher(cfg.redis_url.get_secret_value(), cfg.jobs_queue, settings)
    dispatcher.check()
    _quiet_scheduler_crash()
    sweeper = Sweeper(db, settings, dispatcher, redispatch=True)
    sweeper.sweep()  # jobs orphaned while no worker ran
    sweeper.start()
    log.info("rq worker starting", queue=cfg.jobs_queue, concurrency=concurrency)
    try:
        if concurrency == 1:
            _work_reconnecting(
                worker_class, dispatcher, db, burst=burst, logging_level=cfg.log_level
            )
        else:
            # The pool replaces a worker process whose loop ended (a lost Redis among causes).
            pool = _GuardedWorkerPool(
                db, [dispatcher.queue], connection=dispatcher.redis, num_workers=concurrency
            )
            pool.start(burst=burst, logging_level=cfg.log_level)
    finally:
        sweeper.stop()
        log.info("rq worker stopped")


class _GuardedWorkerPool(WorkerPool):
    """RQ's pool of forked worker processes, forking under ``DB.fork_guard`` (as the single
    worker forks its work horses): a worker process forked while this process's sweeper is
    inside a SQLite write would hand the lock state on to every work horse it forks."""

    def __init__(self, db: DB, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._db = db

    def start_worker(self, *args: Any, **kwargs: Any) -> None:
        with self._db.fork_guard():
            super().start_worker(*args, **kwargs)


def _quiet_scheduler_crash() -> None:
    """RQ's scheduler process logs its failure (a lost Redis) and re-raises it, and
    multiprocessing then prints the traceback again, as text, on stderr: every line of a
    worker's output is to be a JSON log line, so after RQ's log line it exits 1 instead."""
    import rq.scheduler

    original = getattr(rq.scheduler.run, "__wrapped__", rq.scheduler.run)

    @functools.wraps(original)
    def run(scheduler: Any) -> None:
        try:
            original(scheduler)
        except Exception:  # logged by RQ with its traceback (through our chain)
            raise SystemExit(1) from None

    rq.scheduler.run = run


def _work_reconnecting(
    worker_class: type[BaseWorker],
    dispatcher: RQDispatcher,
    db: DB,
    *,
    burst: bool,
    logging_level: str,
) -> None:
    """Run RQ's work loop until a stop is requested; if the loop ends otherwise, start it again.

    RQ's loop retries a lost Redis only while it waits for a job: a connection error anywhere
    else (just after a job, say) ends it with "found an unhandled exception, quitting", and a
    Redis timeout ends it anywhere. The worker process would then exit while Redis restarts,
    so this waits (backing off) until Redis answers and starts a fresh RQ worker in this process.
    """
    stop = threading.Event()

    class StalwartWorker(worker_class):  # type: ignore[valid-type, misc]
        """RQ's worker class, noting that a warm shutdown (SIGTERM, Ctrl+C) was requested."""

        def handle_warm_shutdown_request(self) -> None:
            stop.set()
            super().handle_warm_shutdown_request()

        def fork_work_horse(self, job: Any, queue: Any) -> None:
            # Not while the sweeper thread is inside a write transaction: the work horse
            # would inherit SQLite's lock state and find the database locked (DB.fork_guard).
            with db.fork_guard():
                super().fork_work_horse(job, queue)

    while True:
        name = f"{dispatcher.queue.name}-{uuid.uuid4().hex[:8]}"  # says which queue it serves
        worker = StalwartWorker([dispatcher.queue], connection=dispatcher.redis, name=name)
        failure: RedisError | None = None
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except RedisError as exc:  # RQ's teardown could not reach Redis either
            failure = exc
            if worker.pubsub_thread is not None:
                worker.pubsub_thread.stop()
        if burst or stop.is_set():
            if failure is not None:
                raise failure
            return
        # Between RQ loops, RQ's signal handlers (bound to the worker that ended) must not run.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if not _wait_for_redis(dispatcher, stop, name):
            return


def _wait_for_redis(dispatcher: RQDispatcher, stop: threading.Event, worker: str) -> bool:
    """Wait, backing off, until Redis answers (True) or a stop is requested (False)."""
    delay = RQ_RECONNECT_INITIAL_S
    lost = False
    while True:
        try:
            dispatcher.redis.ping()
        except RedisError as exc:
            lost = True
            log.warning(
                "rq worker lost Redis; reconnecting",
                worker=worker,
                error=str(exc),
                retry_in_s=delay,
            )
            if stop.wait(delay):
                return False
            delay = min(RQ_RECONNECT_MAX_S, delay * 2)
            continue
        if lost:
            log.warning("rq worker reconnected to Redis; starting a new RQ worker", worker=worker)
            return not stop.is_set()
        # Redis answers: RQ's loop ended on something else (or on a Redis blip already over).
        # Start again after a pause, so that a loop that keeps ending cannot spin.
        log.warning("rq worker loop ended unexpectedly; starting it again", worker=worker)
        return not stop.wait(RQ_RECONNECT_INITIAL_S)
