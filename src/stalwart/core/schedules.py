"""Cron-like schedules: APScheduler in exactly one process, each firing enqueues a job.

Every app replica (and worker) may start a ``Scheduler``; only the one holding the leader lock
runs APScheduler, the others wait on standby and take over within ``retry_s`` if the leader
goes away. The lock is a PostgreSQL session advisory lock held on a dedicated connection, or
on SQLite a file lock in the data directory. A firing enqueues its job with the idempotency
key ``schedule:<name>:<fire time>``, so even two leaders could not run one firing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from filelock import FileLock, Timeout
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.logs import get_logger, trace
from stalwart.errors import ConfigError, StalwartError

log = get_logger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Enqueue ``job`` on a crontab expression (``cron``, UTC) or every ``every_s`` seconds."""

    name: str
    job: Job
    cron: str | None = None
    every_s: float | None = None

    def trigger(self) -> BaseTrigger:
        """The APScheduler trigger of this schedule."""
        if (self.cron is None) == (self.every_s is None):
            raise ConfigError(f"Schedule {self.name!r} needs exactly one of cron or every_s.")
        if self.cron is not None:
            try:
                return CronTrigger.from_crontab(self.cron, timezone=UTC)
            except ValueError as exc:
                raise ConfigError(
                    f"Schedule {self.name!r}: bad crontab {self.cron!r}: {exc}"
                ) from None
        assert self.every_s is not None
        return IntervalTrigger(seconds=self.every_s, timezone=UTC)

    def idempotency_key(self, fire_time: datetime) -> str:
        """The key of one firing: the same for whichever process fires it."""
        return f"schedule:{self.name}:{fire_time.astimezone(UTC).isoformat()}"


class LeaderLock(Protocol):
    """A lock at most one process holds."""

    def acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it now."""

    def held(self) -> bool:
        """True while this process still holds the lock."""

    def release(self) -> None:
        """Give the lock up."""


class PostgresLeaderLock:
    """A session advisory lock on a connection kept for it (the lock dies with the session)."""

    def __init__(self, db: DB, name: str = "stalwart-scheduler") -> None:
        self.db = db
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        """Try the lock once on a fresh dedicated connection."""
        try:
            conn = self.db.engine.connect()
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            )
            conn.commit()
        except DBAPIError as exc:
            log.warning("scheduler lock unavailable", error=str(exc.orig))
            return False
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def held(self) -> bool:
        """True while our session lives (a session lock lasts as long as its session)."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except DBAPIError:
            self._drop()
            return False

    def release(self) -> None:
        """Unlock and close the dedicated connection."""
        if self._conn is None:
            return
        with contextlib.suppress(DBAPIError):  # if the session is gone, so is its lock
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.close()
            self._conn = None


class FileLeaderLock:
    """An exclusive file lock (SQLite: every process of one database shares its directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not thread-local: the watch thread checks and releases what start() acquired.
        self._lock = FileLock(str(path), timeout=0, thread_local=False)

    def acquire(self) -> bool:
        """Try the lock once."""
        try:
            self._lock.acquire()
        except Timeout:
            return False
        return True

    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._lock.is_locked

    def release(self) -> None:
        """Unlock."""
        if self._lock.is_locked:
            self._lock.release(force=True)


def leader_lock_for(db: DB, data_dir: Path | None = None) -> LeaderLock:
    """The right lock for ``db``: advisory on PostgreSQL, a file on SQLite."""
    if db.dialect == "postgresql":
        return PostgresLeaderLock(db)
    directory = data_dir or (db.sqlite_path.parent if db.sqlite_path else Path("data"))
    return FileLeaderLock(directory / "scheduler.lock")


class _EnqueueExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs a firing in the scheduler's thread with its scheduled time (enqueueing is quick).

    APScheduler's own executors call the function without the time it was due; the idempotency
    key needs that time, and ``_do_submit_job`` is APScheduler's hook for custom executors.
    """

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        try:
            for run_time in run_times:
                job.func(*job.args, fire_time=run_time)
        except Exception as exc:
            self._run_job_error(job.id, exc, exc.__traceback__)
        else:
            self._run_job_success(job.id, [])


class Scheduler:
    """Runs ``schedules`` while this process holds the leader lock; stands by otherwise."""

    def __init__(
        self,
        queue: JobQueue,
        schedules: Sequence[Schedule],
        *,
        lock: LeaderLock | None = None,
        retry_s: float = 5.0,
    ) -> None:
        self.queue = queue
        self.schedules = {s.name: s for s in schedules}
        for schedule in schedules:
            schedule.trigger()  # a bad schedule fails at start-up, not at its first firing
        self.lock = lock or leader_lock_for(queue.db)
        self.retry_s = retry_s
        self.fired = 0
        self._aps: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """True while this process runs the schedules."""
        return self._aps is not None

    def start(self) -> None:
        """Try to lead now, and keep trying (and checking the lock) in the background."""
        self._try_lead()
        self._thread = threading.Thread(target=self._watch, name="stalwart-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop firing and give up the lock (a standby elsewhere takes over)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._step_down()

    def fire(self, name: str, fire_time: datetime) -> str:
        """Enqueue the job of schedule ``name`` for ``fire_time``; returns the job id."""
        schedule = self.schedules[name]
        job = schedule.job.model_copy(
            update={"idempotency_key": schedule.idempotency_key(fire_time)}
        )
        with trace():
            job_id = self.queue.enqueue(job, user=f"schedule:{name}")
        self.fired += 1
        log.info("schedule fired", schedule=name, fire_time=fire_time.isoformat(), job_id=job_id)
        return job_id

    def _watch(self) -> None:
        while not self._stop.wait(self.retry_s):
            if self.is_leader and not self.lock.held():
                log.warning("scheduler lost its lock; standing by")
                self._step_down()
            if not self.is_leader:
                self._try_lead()

    def _try_lead(self) -> None:
        if self._stop.is_set() or not self.lock.acquire():
            return
        aps = BackgroundScheduler(
            executors={"default": _EnqueueExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=UTC,
        )
        for schedule in self.schedules.values():
            aps.add_job(
                self._fire_safely,
                schedule.trigger(),
                args=[schedule.name],
                id=schedule.name,
                name=schedule.name,
            )
        aps.start()
        self._aps = aps
        log.info("scheduler leading", schedules=sorted(self.schedules))

    def _fire_safely(self, name: str, fire_time: datetime | None = None) -> None:
        assert fire_time is not None, "run by _EnqueueExecutor, which passes the fire time"
        try:
            self.fire(name, fire_time)
        except StalwartError as err:
            log.error("schedule firing failed", schedule=name, error=err.message)

    def _step_down(self) -> None:
        aps, self._aps = self._aps, None
        if aps is not None:
            aps.shutdown(wait=False)
        self.lock.release()
