"""The job demo: a Monte-Carlo portfolio risk computation run as a background job.

The parameters are a small ``st.form`` validated by ``PortfolioRiskParams``: a bad value is
named under its field and every value stays as typed. **Start** enqueues one job per click
(a double click reuses the click's idempotency key, so it starts one job). Below, the user's
recent jobs of this kind with progress bars that follow the ``jobs`` table every second while
one is unfinished, Cancel, the result when done, and the error with Retry when it failed.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import streamlit as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stalwart.core.compute.schemas import PortfolioRiskParams
from stalwart.core.jobs import Job, JobResult, JobStatus, function_reference
from stalwart.core.rbac import ENQUEUE_JOB, Principal
from stalwart.errors import StalwartError
from stalwart.job_runtime import job_service
from stalwart.pages.base import Page, PageRequest
from stalwart.services.compute_jobs import portfolio_risk
from stalwart.services.job_service import JobService
from stalwart.widgets.auth import fresh_principal
from stalwart.widgets.interactions import traced
from stalwart.widgets.jobs import (
    job_actions,
    job_label,
    job_owner,
    job_progress,
    live_jobs,
    note_jobs_changed,
    result_value,
    status_line,
)
from stalwart.widgets.nav import Link, nav_links

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

FUNCTION: Final = function_reference(portfolio_risk)
#: How many of the user's jobs of this kind the page follows.
RECENT: Final = 5
#: A second Start with the same parameters this soon after the first is the same click.
DOUBLE_CLICK_S: Final = 3.0

_PREFIX: Final = "jd-"
_PARAMS_KEY: Final = "_job_demo_params"
_ERRORS_KEY: Final = "_job_demo_errors"
_STARTED_KEY: Final = "_job_demo_started"
_LAST_START_KEY: Final = "_job_demo_last_start"

#: The form's fields and their first values: small enough to finish in a few seconds.
DEFAULTS: Final[dict[str, Any]] = {
    "paths": 200_000,
    "horizon_days": 63,
    "assets": 8,
    "confidence": 0.99,
    "annual_volatility": 0.2,
    "correlation": 0.3,
    "annual_return": 0.06,
    "initial_value": 1_000_000.0,
    "seed": 7,
    "weights": "",
    "timeout_s": 600,
    "max_attempts": 3,
}
LABELS: Final = {
    "paths": "Paths",
    "horizon_days": "Horizon (trading days)",
    "assets": "Assets",
    "confidence": "Confidence",
    "annual_volatility": "Annual volatility",
    "correlation": "Correlation",
    "annual_return": "Annual return",
    "initial_value": "Portfolio value",
    "seed": "Random seed",
    "weights": "Weights",
    "timeout_s": "Time limit (s)",
    "max_attempts": "Attempts",
}


class JobOptions(BaseModel):
    """How the job runs: its time limit and how many attempts it gets."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: int = Field(ge=1, le=86_400)
    max_attempts: int = Field(ge=1, le=10)


class JobDemoPage(Page):
    """Start a portfolio risk simulation as a background job and follow it."""

    slug = "job-demo"
    title = "Job demo"
    icon = ":material/pending_actions:"

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The parameters form, then the user's recent jobs of this kind, live."""
        service = job_service(ctx)
        st.title(self.title)
        st.caption(
            "Value at risk of a portfolio by Monte-Carlo simulation, run as a background "
            "job: it keeps running when you leave this page or close the browser."
        )
        _parameters_form(service, req.principal)
        started = st.session_state.pop(_STARTED_KEY, None)
        if started:
            st.toast(f"Started job {started[:8]}.", icon=":material/play_circle:")
        head, link = st.columns([3, 1], vertical_alignment="bottom")
        head.subheader("Your recent portfolio risk jobs")
        with link:
            nav_links("job-demo-all", [Link("All jobs", "jobs")], label="Jobs", layout="row")
        live_jobs(
            "job_demo", lambda: _recent(service, req.principal), lambda jobs: _draw(service, jobs)
        )


# --- the form -------------------------------------------------------------------------------


def _parameters_form(service: JobService, actor: Principal) -> None:
    values = {**DEFAULTS, **st.session_state.get(_PARAMS_KEY, {})}
    errors: dict[str, str] = st.session_state.get(_ERRORS_KEY, {})

    def number(name: str, **kwargs: Any) -> None:
        st.number_input(LABELS[name], value=values[name], key=_PREFIX + name, **kwargs)
        _field_error(errors, name)

    with st.form("job-demo-params", enter_to_submit=False, border=True):
        left, middle, right = st.columns(3)
        with left:
            number("paths", step=50_000, help="1,000 to 5,000,000 simulated paths")
            number("horizon_days", step=21, help="1 to 756 trading days")
            number("assets", step=1, help="1 to 50 correlated assets")
        with middle:
            number("confidence", step=0.005, format="%.4f", help="0.5 to 0.9999")
            number("annual_volatility", step=0.05, format="%.2f", help="per asset, above 0")
            number("correlation", step=0.05, format="%.2f", help="between assets, 0 to < 1")
        with right:
            number("annual_return", step=0.01, format="%.2f", help="expected, per asset")
            number("initial_value", step=100_000.0, format="%.0f")
            number("seed", step=1, help="the same seed gives the same result")
        st.text_input(
            LABELS["weights"],
            value=values["weights"],
            key=_PREFIX + "weights",
            placeholder="equal weights; or one per asset, e.g. 0.5, 0.3, 0.2",
        )
        _field_error(errors, "weights")
        with st.expander("Job options"):
            opt_left, opt_right = st.columns(2)
            with opt_left:
                number("timeout_s", step=60, help="the job is stopped after this long")
            with opt_right:
                number("max_attempts", step=1, help="1 to 10; a failed attempt is retried")
        _field_error(errors, "form")
        may_start = actor.can(ENQUEUE_JOB)
        st.form_submit_button(
            "Start",
            key="jd-start",
            type="primary",
            icon=":material/play_arrow:",
            on_click=start_job,
            args=(service,),
            disabled=not may_start,
            help=None if may_start else f"Your role {actor.role!r} may not start jobs.",
        )


def _field_error(errors: dict[str, str], name: str) -> None:
    if name in errors:
        st.error(errors[name], icon=":material/error:")


def form_values() -> dict[str, Any]:
    """What the form holds now (as typed)."""
    return {name: st.session_state.get(_PREFIX + name, value) for name, value in DEFAULTS.items()}


@traced
def start_job(service: JobService) -> None:
    """Start's callback: validate the form and enqueue one job, or name what is wrong."""
    actor = fresh_principal()
    owner = job_owner(actor)
    raw = form_values()
    st.session_state[_PARAMS_KEY] = raw  # the form shows these again, even after leaving
    try:
        params, options = validate(raw)
    except FieldErrors as err:
        st.session_state[_ERRORS_KEY] = err.errors
        return
    st.session_state[_ERRORS_KEY] = {}
    try:
        job_id = service.enqueue(
            actor,
            Job.of(
                portfolio_risk,
                params,
                owner=owner,
                timeout_s=options.timeout_s,
                max_attempts=options.max_attempts,
                idempotency_key=click_key(owner, params, options),
            ),
        )
    except StalwartError as err:
        st.session_state[_ERRORS_KEY] = {"form": f"{err.message} {err.action}"}
        return
    st.session_state[_STARTED_KEY] = job_id
    note_jobs_changed()


class FieldErrors(Exception):
    """The form's values do not make a valid job: a message per field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def validate(raw: dict[str, Any]) -> tuple[PortfolioRiskParams, JobOptions]:
    """The parameters and job options of the form's values, or ``FieldErrors``."""
    errors: dict[str, str] = {}
    skipped = ("weights", *JobOptions.model_fields)
    data = {name: raw[name] for name in DEFAULTS if name not in skipped}
    parts = str(raw.get("weights") or "").replace(";", ",").split(",")
    try:
        data["weights"] = tuple(float(part) for part in parts if part.strip())
    except ValueError:
        errors["weights"] = "Weights: give numbers separated by commas, or leave it empty."
    params = options = None
    try:
        params = PortfolioRiskParams.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else _named_field(str(err["msg"]))
            errors.setdefault(name, _message(name, err))
    try:
        options = JobOptions.model_validate({n: raw[n] for n in JobOptions.model_fields})
    except ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0])
            errors.setdefault(name, _message(name, err))
    if errors or params is None or options is None:
        raise FieldErrors(errors or {"form": "The parameters are not valid."})
    return params, options


def _named_field(msg: str) -> str:
    # A model validator says "Value error, weights: ..." when the error is about one field.
    head = msg.removeprefix("Value error, ").split(":", 1)[0]
    return head if head in DEFAULTS else "form"


def _message(name: str, err: Any) -> str:
    text = str(err["msg"]).removeprefix("Value error, ")
    text = text.removeprefix(f"{name}: ")
    label = LABELS.get(name, "The parameters")
    return f"{label}: {text[0].lower() + text[1:] if text else 'invalid'}."


def click_key(owner: str, params: PortfolioRiskParams, options: JobOptions) -> str:
    """The idempotency key of this Start click.

    New for every click, except that a click repeating the previous one's request within
    ``DOUBLE_CLICK_S`` (a double click) reuses its key, so the queue returns the same job.
    """
    request = json.dumps(
        [owner, params.model_dump(mode="json"), options.model_dump()], sort_keys=True
    )
    fingerprint = hashlib.sha256(request.encode()).hexdigest()
    now = time.monotonic()
    last = st.session_state.get(_LAST_START_KEY)
    if last is not None and last[0] == fingerprint and now - last[2] < DOUBLE_CLICK_S:
        key = str(last[1])
    else:
        key = f"job-demo:{uuid.uuid4().hex}"
    st.session_state[_LAST_START_KEY] = (fingerprint, key, now)
    return key


# --- the jobs -------------------------------------------------------------------------------


def _recent(service: JobService, actor: Principal) -> list[JobResult]:
    jobs = service.list_jobs(actor, limit=50)
    return [job for job in jobs if job.function == FUNCTION][:RECENT]


def _draw(service: JobService, jobs: list[JobResult]) -> None:
    if not jobs:
        st.caption("No jobs yet: set the parameters and press **Start**.")
        return
    for job in jobs:
        with st.container(border=True, key=f"jobcard-{job.id}"):
            st.markdown(f"**{job_label(job)}**  \n{status_line(job)}")
            job_progress(job)
            if job.status == JobStatus.SUCCEEDED:
                _result(job)
            elif job.error and job.status in (JobStatus.FAILED, JobStatus.RETRYING):
                st.error(job.error, icon=":material/error:")
            job_actions(service, job, key="jd")


def _result(job: JobResult) -> None:
    cols = st.columns(5)
    money = "{:,.0f}"
    cols[0].metric("Value at risk", money.format(result_value(job, "value_at_risk") or 0))
    cols[1].metric("Expected shortfall", money.format(result_value(job, "expected_shortfall") or 0))
    cols[2].metric("Mean value", money.format(result_value(job, "mean_value") or 0))
    cols[3].metric("P(loss)", f"{(result_value(job, 'probability_of_loss') or 0):.1%}")
    cols[4].metric("Drawdown p95", f"{(result_value(job, 'worst_drawdown_p95') or 0):.1%}")
    confidence = result_value(job, "confidence")
    paths = result_value(job, "paths")
    if confidence and paths:
        st.caption(f"At {confidence:.2%} confidence over {paths:,} paths.")
