"""Any sequence of user and worker actions keeps a job's row consistent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stalwart.core.database import DB
from stalwart.core.job_runner import claim_job, reap_lapsed
from stalwart.core.jobs import (
    ACTIVE,
    FINISHED,
    TRANSITIONS,
    Job,
    JobQueue,
    JobSettings,
    JobStatus,
    NoDispatch,
    check_transition,
)
from stalwart.core.migrations import migrate
from stalwart.errors import IllegalTransitionError
from tests import job_functions as fns

ACTIONS = st.lists(st.sampled_from(["cancel", "retry", "claim", "reap"]), max_size=12)


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobQueue]:
    path: Path = tmp_path_factory.mktemp("jobs") / "jobs.db"
    db = DB(f"sqlite:///{path}")
    migrate(db)
    yield JobQueue(db)
    db.dispose()


@given(st.lists(st.sampled_from(list(JobStatus)), max_size=20))
def test_a_walk_only_follows_the_table(targets: list[JobStatus]) -> None:
    status = JobStatus.QUEUED
    for target in targets:
        if target in TRANSITIONS[status]:
            status = target
        else:
            with pytest.raises(IllegalTransitionError):
                check_transition(status, target)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ACTIONS)
def test_actions_keep_the_row_consistent(queue: JobQueue, actions: list[str]) -> None:
    lapse_now = JobSettings(lease_s=0.0)  # every running job counts as abandoned
    job_id = queue.enqueue(Job.of(fns.add, {"a": 1, "b": 1}, max_attempts=2))
    for action in actions:
        before = queue.poll(job_id)
        try:
            if action == "cancel":
                queue.cancel(job_id)
            elif action == "retry":
                queue.retry(job_id)
            elif action == "claim":
                claim_job(queue.db, job_id, "w/1/t", "embedded")
            else:
                reap_lapsed(queue.db, lapse_now, NoDispatch())
        except IllegalTransitionError:
            assert queue.poll(job_id) == before  # a refused action changes nothing
        job = queue.poll(job_id)
        assert job.status == before.status or job.status in TRANSITIONS[before.status]
        assert 0 <= job.attempts <= job.max_attempts
        assert (job.finished_at is not None) == (job.status in FINISHED)
        assert (job.worker_id is not None) == (job.status in ACTIVE)
        assert job.cancel_requested == (job.status in ("cancelling", "cancelled"))
