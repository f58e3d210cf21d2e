"""The job demo and Jobs pages, and the finish notifier, under AppTest (in-process, no server).

Without the app's lifespan, ``job_queue()`` stores jobs without running them; the tests that
need them to run start the embedded engine in this process (``start_job_engine``) with short
intervals, and use the test job functions of ``tests.job_functions`` (a failure on demand).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from stalwart.bootstrap import current_app, shutdown_app
from stalwart.core.jobs import Job, JobQueue, JobStatus
from stalwart.job_runtime import job_queue, start_job_engine, stop_job_engine
from stalwart.pages import job_demo
from stalwart.web.asgi import SHELL_SCRIPT
from tests import job_functions
from tests.conftest import editor
from tests.e2e.conftest import SECRET
from tests.jobs_harness import FAST_ENV, wait_status

SESSION_KEY = "_stalwart_user_session"


@pytest.fixture
def app_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    for name in [k for k in os.environ if k.startswith("STALWART_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STALWART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STALWART_SECRET_KEY", SECRET)
    monkeypatch.setenv("STALWART_AUTH_MODE", "off")  # sign-in has tests of its own
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    stop_job_engine()
    shutdown_app()
    try:
        yield AppTest.from_file(SHELL_SCRIPT, default_timeout=30)
    finally:
        stop_job_engine(wait_s=5)
        shutdown_app()


@pytest.fixture
def engine(app_test: AppTest) -> JobQueue:
    """The embedded engine running in this process (one worker), over the test's database."""
    return start_job_engine(current_app(), workers=1, schedules=()).queue


def open_page(at: AppTest, slug: str) -> AppTest:
    at.query_params["page"] = slug
    return at.run()


def owner_of(at: AppTest) -> str:
    session = at.session_state[SESSION_KEY]
    return session.id[:12] if session.persistent else str(session.id)


def fill(at: AppTest, **values: Any) -> None:
    for name, value in values.items():
        widget = at.text_input(key=f"jd-{name}") if name == "weights" else None
        if widget is None:
            widget = at.number_input(key=f"jd-{name}")
        widget.set_value(value)


def click_start(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.key == "jd-start"]
    return button.click().run()


def progress_bars(at: AppTest) -> list[Any]:
    return list(at.get("progress"))


def texts(at: AppTest) -> str:
    parts = [str(e.value) for e in at.markdown] + [str(e.value) for e in at.caption]
    return "\n".join(parts)


# --- job demo -------------------------------------------------------------------------------


def test_job_demo_offers_the_parameters_and_no_jobs_yet(app_test: AppTest) -> None:
    at = open_page(app_test, "job-demo")

    assert not at.exception
    assert at.title[0].value == "Job demo"
    assert at.number_input(key="jd-paths").value == job_demo.DEFAULTS["paths"]
    assert "No jobs yet" in texts(at)
    assert progress_bars(at) == []


def test_bad_parameters_are_named_under_their_field_and_nothing_is_lost(
    app_test: AppTest,
) -> None:
    at = open_page(app_test, "job-demo")
    fill(at, paths=10, confidence=1.5, weights="0.5, 0.5", timeout_s=0)
    at = click_start(at)

    assert [str(e.value) for e in at.error] == [
        "Paths: input should be greater than or equal to 1000.",
        "Confidence: input should be less than or equal to 0.9999.",
        "Time limit (s): input should be greater than or equal to 1.",
    ]
    # What was typed is still there, and no job was made.
    assert at.number_input(key="jd-paths").value == 10
    assert at.text_input(key="jd-weights").value == "0.5, 0.5"
    assert job_queue().list_jobs() == []

    # Fixed, the next problem (weights against the number of assets) is named in its turn.
    fill(at, paths=1000, confidence=0.99, timeout_s=60, assets=2, weights="0.5, 0.6")
    at = click_start(at)
    assert [str(e.value) for e in at.error] == ["Weights: must be non-negative and sum to 1."]
    assert job_queue().list_jobs() == []


def test_weights_that_are_not_numbers_are_named(app_test: AppTest) -> None:
    at = open_page(app_test, "job-demo")
    fill(at, weights="half, half")
    at = click_start(at)

    assert "Weights: give numbers separated by commas, or leave it empty." in [
        str(e.value) for e in at.error
    ]
    assert job_queue().list_jobs() == []


def test_start_enqueues_one_job_of_the_user_with_the_form_parameters(app_test: AppTest) -> None:
    at = open_page(app_test, "job-demo")
    fill(at, paths=20_000, horizon_days=21, timeout_s=120, max_attempts=2)
    at = click_start(at)

    (job,) = job_queue().list_jobs()
    assert job.owner == owner_of(at)
    assert job.args["paths"] == 20_000
    assert job.args["horizon_days"] == 21
    assert job.timeout_s == 120
    assert job.max_attempts == 2
    assert job.status == JobStatus.QUEUED  # no engine here: nothing runs it
    assert [str(t.value) for t in at.toast] == [f"Started job {job.id[:8]}."]
    assert len(progress_bars(at)) == 1
    assert at.button(key=f"jd-cancel-{job.id}")


def test_a_double_click_on_start_starts_one_job(app_test: AppTest) -> None:
    at = open_page(app_test, "job-demo")
    at = click_start(at)
    at = click_start(at)  # the second click of a double click: same request, at once

    assert len(job_queue().list_jobs()) == 1


def test_two_deliberate_clicks_start_two_jobs(
    app_test: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_demo, "DOUBLE_CLICK_S", 0.0)  # every click counts as a new one
    at = open_page(app_test, "job-demo")
    at = click_start(at)
    at = click_start(at)

    assert len(job_queue().list_jobs()) == 2


def test_cancel_on_the_card_cancels_a_queued_job_and_offers_retry(app_test: AppTest) -> None:
    at = click_start(open_page(app_test, "job-demo"))
    (job,) = job_queue().list_jobs()

    at = at.button(key=f"jd-cancel-{job.id}").click().run()

    assert job_queue().poll(job.id).status == JobStatus.CANCELLED
    assert "Cancelled." in texts(at)
    assert at.button(key=f"jd-retry-{job.id}")


def test_the_parameters_come_back_after_leaving_the_page(app_test: AppTest) -> None:
    at = open_page(app_test, "job-demo")
    fill(at, paths=30_000)
    at = click_start(at)
    at = open_page(at, "home")
    at = open_page(at, "job-demo")

    assert at.number_input(key="jd-paths").value == 30_000


def test_a_finished_job_shows_its_risk_metrics(app_test: AppTest, engine: JobQueue) -> None:
    at = open_page(app_test, "job-demo")
    fill(at, paths=5_000, horizon_days=5, assets=2)
    at = click_start(at)
    (job,) = engine.list_jobs()
    wait_status(engine, job.id, "succeeded")

    at = at.run()

    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) >= {"Value at risk", "Expected shortfall", "P(loss)"}
    assert float(metrics["Value at risk"].replace(",", "")) > 0
    assert all(b.key != f"jd-cancel-{job.id}" for b in at.button)


# --- the Jobs page ---------------------------------------------------------------------------


def test_jobs_page_lists_only_the_users_jobs(app_test: AppTest) -> None:
    at = open_page(app_test, "jobs")
    queue = job_queue()
    mine = queue.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner_of(at)))
    queue.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner="someone-else"))

    at = at.run()

    table = at.dataframe[0].value
    assert list(table["id"]) == [mine]
    assert list(table["status"]) == ["queued"]
    assert list(table["attempts"]) == ["0/3"]


def test_jobs_page_filters_by_status(app_test: AppTest) -> None:
    at = open_page(app_test, "jobs")
    queue = job_queue()
    owner = owner_of(at)
    kept = queue.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner))
    cancelled = queue.enqueue(Job.of(job_functions.add, {"a": 3, "b": 4}, owner=owner))
    queue.cancel(cancelled)

    at = at.run()
    assert set(at.dataframe[0].value["id"]) == {kept, cancelled}

    at.button_group(key="jobs-status-filter").set_value(["cancelled"])
    at = at.run()
    assert list(at.dataframe[0].value["id"]) == [cancelled]


def test_a_failed_job_shows_its_error_and_retry_runs_it_again(
    app_test: AppTest, engine: JobQueue, tmp_path: Path
) -> None:
    at = open_page(app_test, "jobs")
    job_id = engine.enqueue(
        Job.of(
            job_functions.flaky,
            {"message": "the feed was empty", "counter": str(tmp_path / "calls"), "fail_times": 1},
            owner=owner_of(at),
            max_attempts=1,
        )
    )
    wait_status(engine, job_id, "failed")

    at = at.run()
    assert "ValueError: the feed was empty" in [str(e.value) for e in at.error]
    assert at.dataframe[0].value["error"][0] == "ValueError: the feed was empty"

    at = at.button(key=f"jobs-retry-{job_id}").click().run()
    assert "Queued again; its attempts start over." in texts(at)
    done = wait_status(engine, job_id, "succeeded")
    assert done.attempts == 1
    assert done.result == {"calls": 2}

    at = at.run()
    assert list(at.dataframe[0].value["status"]) == ["succeeded"]
    assert not at.error


def test_cancel_on_the_jobs_page_stops_a_running_job(
    app_test: AppTest, engine: JobQueue, tmp_path: Path
) -> None:
    at = open_page(app_test, "jobs")
    job_id = engine.enqueue(
        Job.of(job_functions.wait_for_gate, {"gate": str(tmp_path / "never")}, owner=owner_of(at))
    )
    wait_status(engine, job_id, "running")

    at = at.run().button(key=f"jobs-cancel-{job_id}").click().run()

    assert wait_status(engine, job_id, "cancelled").status == JobStatus.CANCELLED
    at = at.run()
    assert list(at.dataframe[0].value["status"]) == ["cancelled"]
    assert at.button(key=f"jobs-retry-{job_id}")


def test_acting_on_someone_elses_job_is_refused(app_test: AppTest) -> None:
    open_page(app_test, "jobs")
    queue = job_queue()
    theirs = queue.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner="someone-else"))
    from stalwart.core.session import UserSession
    from stalwart.job_runtime import job_service
    from stalwart.widgets.auth import _STATE_KEY, _AuthState
    from stalwart.widgets.jobs import cancel_job

    # The callback's service checks the job's owner against who acts, whatever id a crafted
    # request names: an editor may cancel their own jobs only.
    me = editor("me")
    with pytest.MonkeyPatch.context() as mp:
        state: dict[str, Any] = {
            _STATE_KEY: _AuthState(me, None, UserSession("sid", "tab", True, "jobs", {}))
        }
        mp.setattr("stalwart.widgets.jobs.st.session_state", state)
        mp.setattr("stalwart.widgets.auth.st.session_state", state)
        cancel_job(job_service(), theirs)

    assert queue.poll(theirs).status == JobStatus.QUEUED
    assert "other people's jobs" in state["_stalwart_job_notice"][2]


# --- the finish notifier --------------------------------------------------------------------


class Clock:
    """The notifier's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def after_the_quiet_period(self) -> None:
        from stalwart.widgets.jobs import QUIET_RECHECK_S

        self.now += QUIET_RECHECK_S + 0.1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from stalwart.widgets import jobs

    clock = Clock()
    monkeypatch.setattr(jobs, "clock", clock)
    return clock


def test_a_job_that_finishes_is_announced_once_on_any_page(
    app_test: AppTest, engine: JobQueue, clock: Clock
) -> None:
    at = open_page(app_test, "home")
    # Started elsewhere (another tab, the CLI): this session learns of it at its next look.
    job_id = engine.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner_of(at)))
    wait_status(engine, job_id, "succeeded")

    clock.after_the_quiet_period()
    at = at.run()
    assert [str(t.value) for t in at.toast] == [f"add job {job_id[:8]} finished."]

    at = open_page(at, "settings")
    assert [str(t.value) for t in at.toast] == []  # once


def test_with_nothing_unfinished_the_notifier_looks_again_only_after_a_quiet_period(
    app_test: AppTest, engine: JobQueue, clock: Clock
) -> None:
    at = open_page(app_test, "home")  # no jobs: quiet
    job_id = engine.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner_of(at)))
    wait_status(engine, job_id, "succeeded")

    at = open_page(at, "settings")  # within the quiet period: no query, no toast yet
    assert [str(t.value) for t in at.toast] == []
    clock.after_the_quiet_period()
    at = at.run()
    assert [str(t.value) for t in at.toast] == [f"add job {job_id[:8]} finished."]


def test_a_job_this_session_starts_is_watched_at_once(
    app_test: AppTest, engine: JobQueue, clock: Clock
) -> None:
    at = open_page(app_test, "job-demo")  # quiet: none of the user's jobs is unfinished
    fill(at, paths=20_000)
    at = click_start(at)  # enqueued here: the notifier reads the table again at once
    (job,) = engine.list_jobs(owner=owner_of(at))
    wait_status(engine, job.id, "succeeded")

    at = open_page(at, "settings")  # the clock has not moved
    assert [str(t.value) for t in at.toast] == [f"Portfolio risk job {job.id[:8]} finished."]


def test_a_failure_is_announced_with_its_error(
    app_test: AppTest, engine: JobQueue, clock: Clock
) -> None:
    at = open_page(app_test, "settings")
    job_id = engine.enqueue(
        Job.of(job_functions.flaky, {"message": "no data"}, owner=owner_of(at), max_attempts=1)
    )
    wait_status(engine, job_id, "failed")

    clock.after_the_quiet_period()
    at = at.run()
    assert [str(t.value) for t in at.toast] == [
        f"flaky job {job_id[:8]} failed: ValueError: no data"
    ]


def test_jobs_that_finished_before_the_session_began_are_not_announced(
    app_test: AppTest, engine: JobQueue
) -> None:
    at = open_page(app_test, "home")
    owner = owner_of(at)
    job_id = engine.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner))
    wait_status(engine, job_id, "succeeded")

    # A new browser session of the same user (a new tab, or the browser opened again).
    fresh = AppTest.from_file(SHELL_SCRIPT, default_timeout=30)
    fresh.session_state[SESSION_KEY] = at.session_state[SESSION_KEY]
    fresh = open_page(fresh, "home")

    assert [str(t.value) for t in fresh.toast] == []


# --- the rules behind the live views --------------------------------------------------------


def test_views_poll_only_while_a_job_is_unfinished(app_test: AppTest) -> None:
    from stalwart.widgets.jobs import LIVE_INTERVAL_S, live_interval

    at = open_page(app_test, "jobs")
    queue = job_queue()
    job_id = queue.enqueue(Job.of(job_functions.add, {"a": 1, "b": 2}, owner=owner_of(at)))

    assert live_interval([]) is None
    assert live_interval([queue.poll(job_id)]) == LIVE_INTERVAL_S
    assert live_interval([queue.cancel(job_id)]) is None
