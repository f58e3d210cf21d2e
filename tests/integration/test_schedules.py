"""Schedules fire in exactly one process: two schedulers on one database, one leads."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.schedules import FileLeaderLock, Schedule, Scheduler, leader_lock_for
from stalwart.errors import ConfigError
from tests import job_functions as fns


def wait_until(condition, what: str, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_only_one_of_two_schedulers_fires_and_the_other_takes_over(db: DB) -> None:
    schedule = Schedule("tick", Job.of(fns.add, {"a": 1, "b": 2}), every_s=0.2)
    queue = JobQueue(db)
    one = Scheduler(queue, [schedule], retry_s=0.1)
    two = Scheduler(queue, [schedule], retry_s=0.1)
    one.start()
    two.start()
    try:
        wait_until(lambda: one.fired + two.fired >= 3, "three firings")
        leader, standby = (one, two) if one.is_leader else (two, one)
        assert leader.is_leader
        assert not standby.is_leader
        assert standby.fired == 0
        keys = {j.idempotency_key for j in queue.list_jobs()}
        assert len(keys) == len(queue.list_jobs()) >= 3
        assert all(k and k.startswith("schedule:tick:") for k in keys)

        leader.stop()  # the leading replica goes away
        wait_until(lambda: standby.fired > 0, "the standby firing")
        assert standby.is_leader
    finally:
        one.stop()
        two.stop()


def test_a_firing_is_enqueued_once_whoever_fires_it(db: DB) -> None:
    schedule = Schedule("nightly", Job.of(fns.add, {"a": 1, "b": 1}), cron="0 3 * * *")
    queue = JobQueue(db)
    at = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    first = Scheduler(queue, [schedule]).fire("nightly", at)
    second = Scheduler(queue, [schedule]).fire("nightly", at)
    assert first == second
    job = queue.poll(first)
    assert job.idempotency_key == "schedule:nightly:2026-11-22T03:00:00+00:00"


def test_bad_schedules_fail_at_start(tmp_path: Path) -> None:
    job = Job(function="tests.job_functions:add", args={"a": 1, "b": 1})
    with pytest.raises(ConfigError, match="exactly one of cron or every_s"):
        Schedule("x", job).trigger()
    with pytest.raises(ConfigError, match="bad crontab"):
        Schedule("x", job, cron="every day").trigger()
    lock = leader_lock_for(DB(f"sqlite:///{tmp_path / 'a.db'}"))
    assert isinstance(lock, FileLeaderLock)
    assert lock.path == tmp_path / "scheduler.lock"
    assert lock.acquire()
    assert lock.held()
    other = FileLeaderLock(tmp_path / "scheduler.lock")
    assert not other.acquire()
    lock.release()
    assert other.acquire()
    other.release()
