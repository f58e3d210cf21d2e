"""Background jobs in the UI: progress bars, cancel / retry, live polling and finish toasts.

Everything here reads the ``jobs`` table through ``JobQueue.poll``/``list_jobs``; nothing asks
a worker. Live views are fragments with ``run_every`` that are only registered while one of the
user's jobs is unfinished; when the last one ends, the fragment asks for one full rerun, which
registers them without a timer again, so an idle page stays idle (no reruns at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import streamlit as st

from stalwart.core.jobs import JobQueue, JobResult, JobStatus, function_reference
from stalwart.core.rbac import Principal, job_action
from stalwart.errors import StalwartError
from stalwart.models.base import utcnow
from stalwart.services.compute_jobs import portfolio_risk
from stalwart.services.job_service import JobService
from stalwart.widgets.auth import current_principal, fresh_principal
from stalwart.widgets.interactions import fragment, traced

#: Seconds between two reads of the table while a page shows a job that is unfinished.
LIVE_INTERVAL_S: Final = 1.0
#: Seconds between two reads by the finish notifier (on every page) while a job is unfinished.
NOTIFY_INTERVAL_S: Final = 2.0
#: How many of the user's newest jobs the notifier looks at.
NOTIFY_WINDOW: Final = 20
#: With none of the user's jobs unfinished, the notifier reads the table again after this many
#: seconds (at the next run), or at once after this session started, cancelled or retried one.
#: A job started in another tab is therefore noticed within this time of the next interaction.
QUIET_RECHECK_S: Final = 10.0
#: The notifier's clock (tests move it).
clock: Callable[[], float] = time.monotonic

#: Human names of the registered job functions (``module:qualname`` -> title).
JOB_TITLES: Final[dict[str, str]] = {
    function_reference(portfolio_risk): "Portfolio risk",
}
STATUS_ICONS: Final[dict[JobStatus, str]] = {
    JobStatus.QUEUED: ":material/schedule:",
    JobStatus.RUNNING: ":material/play_circle:",
    JobStatus.RETRYING: ":material/replay:",
    JobStatus.CANCELLING: ":material/cancel_schedule_send:",
    JobStatus.SUCCEEDED: ":material/check_circle:",
    JobStatus.FAILED: ":material/error:",
    JobStatus.CANCELLED: ":material/block:",
}
_NOTICE_KEY: Final = "_stalwart_job_notice"
_WATCH_KEY: Final = "_stalwart_job_watch"
_CHANGES_KEY: Final = "_stalwart_job_changes"


def job_owner(principal: Principal) -> str:
    """The owner recorded on jobs a user starts: their username.

    With sign-in off, the "user" is the browser identity (``widgets.auth.off_principal``).
    """
    return principal.username


def job_title(job: JobResult) -> str:
    """What to call a job: its function's title (or its bare name)."""
    return JOB_TITLES.get(job.function, job.function.rpartition(":")[2].replace("_", " "))


def job_label(job: JobResult) -> str:
    """A one-line name for a job: title, short id and when it was created (local to UTC)."""
    return f"{job_title(job)} · {job.id[:8]} · {job.created_at:%Y-%m-%d %H:%M:%S} UTC"


def any_unfinished(jobs: Sequence[JobResult]) -> bool:
    """True if one of ``jobs`` is queued, running, retrying or cancelling."""
    return any(not job.finished for job in jobs)


def live_interval(jobs: Sequence[JobResult]) -> float | None:
    """The polling interval a view of ``jobs`` needs: ``LIVE_INTERVAL_S``, or None when idle."""
    return LIVE_INTERVAL_S if any_unfinished(jobs) else None


def format_duration(seconds: float | None) -> str:
    """``12.3 s``, ``4 min 05 s``, ``1 h 02 min``; an em dash before the job started."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_line(job: JobResult) -> str:
    """Status, attempts and duration in one line of Markdown."""
    parts = [f"**{job.status.value}**", f"attempt {job.attempts} of {job.max_attempts}"]
    if job.started_at is not None:
        parts.append(
            f"{'ran' if job.finished else 'running for'} {format_duration(job.duration_s)}"
        )
    return " · ".join(parts)


def job_progress(job: JobResult) -> None:
    """A progress bar (never a spinner) with the job's own progress message."""
    message = job.progress_message or job.status.value
    st.progress(round(job.progress), text=f"{job.progress:.0f}% · {message}")


# --- actions --------------------------------------------------------------------------------


@traced
def cancel_job(service: JobService, job_id: str) -> None:
    """Button callback: cancel ``job_id`` as the signed-in user; the outcome becomes a notice."""
    _act(service, job_id, "cancel")


@traced
def retry_job(service: JobService, job_id: str) -> None:
    """Button callback: retry ``job_id`` as the signed-in user; the outcome becomes a notice."""
    _act(service, job_id, "retry")


def _act(service: JobService, job_id: str, action: str) -> None:
    # Runs as an on_click callback, before the fragment body reads the table again, so the
    # view drawn after it shows the new status. The service checks who may act on the job
    # (its owner, or a role that manages jobs), with the sign-in as of now.
    actor = fresh_principal()
    try:
        if action == "cancel":
            done = service.cancel(actor, job_id)
            text = (
                "Cancel requested; it stops at its next progress report."
                if done.status == JobStatus.CANCELLING
                else "Cancelled."
            )
        else:
            service.retry(actor, job_id)
            text = "Queued again; its attempts start over."
        note_jobs_changed()  # the notifier watches the job again (cancel: until it stops)
        st.session_state[_NOTICE_KEY] = (job_id, "info", text)
    except StalwartError as err:
        st.session_state[_NOTICE_KEY] = (job_id, "warning", f"{err.message} {err.action}")


def job_actions(service: JobService, job: JobResult, *, key: str) -> None:
    """Cancel (queued or running) and Retry (failed or cancelled) buttons, then any notice.

    Shown to those who may use them (the job's owner with ``run_jobs``, or ``manage_jobs``);
    the service checks again when one is pressed.
    """
    actor = current_principal()
    allowed = actor.can(job_action(actor, job.owner))
    if job.can_cancel and allowed:
        st.button(
            "Cancel",
            key=f"{key}-cancel-{job.id}",
            icon=":material/stop_circle:",
            on_click=cancel_job,
            args=(service, job.id),
        )
    if job.can_retry and allowed:
        st.button(
            "Retry",
            key=f"{key}-retry-{job.id}",
            icon=":material/replay:",
            on_click=retry_job,
            args=(service, job.id),
        )
    notice = st.session_state.get(_NOTICE_KEY)
    if notice and notice[0] == job.id:
        _, level, text = notice
        (st.warning if level == "warning" else st.caption)(text)


# --- live views -----------------------------------------------------------------------------


@dataclass
class Prefetched:
    """Rows the full run already read, handed to a fragment's first (inline) run only.

    A fragment rerun calls the function again with the arguments of the full run, so the
    rows must not be reused then: ``take`` gives them once, then None.
    """

    rows: list[JobResult] | None = field(default=None)

    def take(self) -> list[JobResult] | None:
        """The rows, once."""
        rows, self.rows = self.rows, None
        return rows


def live_jobs(
    name: str,
    read: Callable[[], list[JobResult]],
    draw: Callable[[list[JobResult]], None],
) -> None:
    """Draw ``read()`` with ``draw`` in a fragment that re-reads every second while needed.

    The fragment has a timer only if the rows read now include an unfinished job. When a
    rerun of the fragment finds that this changed (the last job ended, or a Retry queued one
    while it had no timer), it asks for a full rerun, which registers it with the right timer.
    """
    rows = read()
    interval = live_interval(rows)
    prefetched = Prefetched(rows)

    def body() -> None:
        current = prefetched.take()
        if current is None:  # a timed (or button) rerun of the fragment: read the table again
            current = read()
            if live_interval(current) != interval:
                st.rerun()
        draw(current)

    body.__qualname__ = body.__name__ = f"live_jobs_{name}"  # the fragment's identity
    fragment(body, run_every=interval)()


# --- finish notifications -------------------------------------------------------------------


@dataclass
class WatchState:
    """What this Streamlit session has announced: jobs finished after ``since``, once each."""

    since: datetime
    announced: dict[str, datetime] = field(default_factory=dict)
    #: monotonic time until which runs need not read the table (nothing of the user's is
    #: unfinished); None: read it at the next run
    quiet_until: float | None = None
    #: the ``note_jobs_changed`` count the last read saw
    seen_changes: int = 0


def note_jobs_changed() -> None:
    """Tell the notifier that this session changed a job (enqueue, cancel, retry)."""
    st.session_state[_CHANGES_KEY] = int(st.session_state.get(_CHANGES_KEY, 0)) + 1


def finished_to_announce(jobs: Sequence[JobResult], state: WatchState) -> list[JobResult]:
    """The jobs that finished after the session started and were not announced for that finish.

    Keyed by id and finish time, so a job retried and finished again is announced again.
    """
    fresh = []
    for job in jobs:
        end = job.finished_at
        if not job.finished or end is None or end < state.since:
            continue
        if state.announced.get(job.id) != end:
            fresh.append(job)
    return fresh


def finish_message(job: JobResult) -> tuple[str, str]:
    """The toast for a finished job: its text and icon."""
    name = f"{job_title(job)} job {job.id[:8]}"
    if job.status == JobStatus.SUCCEEDED:
        return f"{name} finished.", ":material/check_circle:"
    if job.status == JobStatus.FAILED:
        return f"{name} failed: {job.error or 'no reason recorded'}", ":material/error:"
    return f"{name} was cancelled.", ":material/block:"


def job_notifier(queue: JobQueue, owner: str) -> None:
    """Toast "… finished / failed / was cancelled" once per finish of the user's jobs.

    Called by the shell on every page. While one of the user's jobs is unfinished it reads
    the user's newest jobs on every full run and polls every ``NOTIFY_INTERVAL_S``; when none
    is, it reads again only ``QUIET_RECHECK_S`` later or after this session changed a job
    (``note_jobs_changed``), so an ordinary interaction does not pay for a query. Jobs that
    finished before this browser session began are not announced: the Jobs page shows them.
    """
    state = st.session_state.get(_WATCH_KEY)
    if not isinstance(state, WatchState):
        state = WatchState(since=utcnow())
        st.session_state[_WATCH_KEY] = state
    changes = int(st.session_state.get(_CHANGES_KEY, 0))
    now = clock()
    if state.quiet_until is not None and now < state.quiet_until and changes == state.seen_changes:
        return
    state.seen_changes = changes
    rows = queue.list_jobs(owner=owner, limit=NOTIFY_WINDOW)
    state.quiet_until = None if any_unfinished(rows) else now + QUIET_RECHECK_S
    prefetched = Prefetched(rows)

    def job_finish_watch() -> None:
        current = prefetched.take()
        if current is None:
            current = queue.list_jobs(owner=owner, limit=NOTIFY_WINDOW)
            if not any_unfinished(current):
                # Toast in the full run that follows: it also stops this timer.
                st.rerun()
        announce(current, state)

    interval = NOTIFY_INTERVAL_S if any_unfinished(rows) else None
    fragment(job_finish_watch, run_every=interval)()


def announce(jobs: Sequence[JobResult], state: WatchState) -> None:
    """Toast each job newly finished, and remember it."""
    for job in finished_to_announce(jobs, state):
        text, icon = finish_message(job)
        st.toast(text, icon=icon, duration="long")
        assert job.finished_at is not None
        state.announced[job.id] = job.finished_at


def result_value(job: JobResult, name: str) -> Any:
    """One field of a succeeded job's result (None if absent)."""
    return job.result.get(name) if isinstance(job.result, dict) else None
