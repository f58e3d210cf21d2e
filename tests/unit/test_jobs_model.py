"""The job status machine, job definitions, the progress reporter and the risk computation."""

from __future__ import annotations

import itertools

import pytest

from stalwart.core.compute.risk import simulate_portfolio
from stalwart.core.compute.schemas import PortfolioRiskParams
from stalwart.core.config import load_config
from stalwart.core.job_runner import backoff_delay, error_message
from stalwart.core.jobs import (
    ACTIVE,
    CLAIMABLE,
    FINISHED,
    TRANSITIONS,
    Job,
    JobSettings,
    JobStatus,
    Reporter,
    check_transition,
    function_reference,
    resolve,
)
from stalwart.errors import (
    ConfigError,
    IllegalTransitionError,
    JobCancelled,
    JobDefinitionError,
    StalwartError,
)
from stalwart.services.compute_jobs import portfolio_risk
from tests import job_functions as fns

S = JobStatus
LEGAL = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.CANCELLED),
    (S.RETRYING, S.RUNNING),
    (S.RETRYING, S.CANCELLED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.CANCELLING),
    (S.RUNNING, S.QUEUED),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.SUCCEEDED),
    (S.FAILED, S.QUEUED),
    (S.CANCELLED, S.QUEUED),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(JobStatus, JobStatus)))
def test_every_transition_is_allowed_or_refused_as_written(current: S, new: S) -> None:
    if (current, new) in LEGAL:
        assert check_transition(current.value, new.value) is new
    else:
        with pytest.raises(IllegalTransitionError, match=f"is {current} and cannot become {new}"):
            check_transition(current.value, new.value, job_id="j1")


def test_the_table_and_its_derived_sets_agree() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert frozenset({S.QUEUED, S.RETRYING}) == CLAIMABLE
    assert frozenset({S.RUNNING, S.CANCELLING}) == ACTIVE
    assert not TRANSITIONS[S.SUCCEEDED]
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED} == FINISHED
    with pytest.raises(IllegalTransitionError, match="Unknown job status"):
        check_transition("queued", "lost")
    with pytest.raises(IllegalTransitionError, match="it is final"):
        check_transition("succeeded", "queued")


def test_jobs_name_registered_functions_with_valid_json_arguments() -> None:
    job = Job.of(fns.add, {"a": "2", "b": 3}, owner="alice", priority=5)
    assert job.function == "tests.job_functions:add" == function_reference(fns.add)
    assert job.args == {"a": 2, "b": 3}  # validated and normalised by the function's model
    assert resolve(job.function).fn is fns.add
    with pytest.raises(JobDefinitionError, match=r"Invalid arguments for .*add: b: Field required"):
        Job.of(fns.add, {"a": 1})
    with pytest.raises(JobDefinitionError, match="not a registered job function"):
        resolve(function_reference(fns.not_registered))
    with pytest.raises(JobDefinitionError, match="cannot be imported"):
        resolve("no_such_module_here:f")
    with pytest.raises(JobDefinitionError, match="not a function reference"):
        resolve("nocolon")
    with pytest.raises(ValueError, match="arguments must be JSON data"):
        Job(function="tests.job_functions:add", args={"a": object()})
    with pytest.raises(ValueError, match="greater than 0"):
        Job(function="tests.job_functions:add", timeout_s=0)


def test_reporter_writes_progress_throttled_and_raises_once_cancelled() -> None:
    writes: list[tuple[float, str]] = []
    cancel = False

    def write(pct: float, message: str) -> bool:
        writes.append((pct, message))
        return cancel

    reporter = Reporter(write, min_interval_s=3600)
    reporter.report(-5, "start")
    reporter.report(40, "later")  # within the interval: kept for the heartbeat
    assert writes == [(0.0, "start")]
    assert reporter.take_pending() == (40.0, "later")
    assert reporter.take_pending() is None
    reporter.report(150, "done")  # 100% is always written
    assert writes[-1] == (100.0, "done")
    assert not reporter.cancelled
    reporter.raise_if_cancelled()
    cancel = True
    with pytest.raises(JobCancelled, match="cancelled"):
        reporter.report(100, "again")  # the write says cancel was requested
    assert reporter.cancelled
    with pytest.raises(JobCancelled):
        reporter.raise_if_cancelled()  # every later check raises too


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    settings = JobSettings(backoff_initial_s=1.0, backoff_max_s=10.0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 10.0)]:
        delay = backoff_delay(attempt, settings)
        assert base <= delay <= base * 1.5


def test_error_messages_for_people() -> None:
    assert error_message(StalwartError("Disk full", "Free space.")) == "Disk full"
    assert error_message(KeyError("x")) == "KeyError: 'x'"


def test_job_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_JOBS_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("STALWART_JOBS_LEASE_S", "2")
    cfg = load_config()
    assert JobSettings.from_config(cfg).lease_s == 2.0
    assert cfg.jobs_engine == "embedded"
    monkeypatch.setenv("STALWART_JOBS_LEASE_S", "1")
    with pytest.raises(ConfigError, match="less than three heartbeats"):
        load_config()
    monkeypatch.setenv("STALWART_JOBS_LEASE_S", "2")
    monkeypatch.setenv("STALWART_REDIS_URL", "http://cache")
    with pytest.raises(ConfigError, match="STALWART_REDIS_URL: not a Redis URL"):
        load_config()
    monkeypatch.setenv("STALWART_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("STALWART_JOBS_ENGINE", "celery")
    with pytest.raises(ConfigError, match=r"STALWART_JOBS_ENGINE.*use embedded"):
        load_config()


def test_the_risk_simulation_reports_progress_and_is_reproducible() -> None:
    params = PortfolioRiskParams(assets=3, paths=6_000, horizon_days=10, seed=1)
    seen: list[float] = []
    risk = simulate_portfolio(params, lambda pct, _msg: seen.append(pct))
    assert seen == sorted(seen)
    assert seen[-1] == 100.0
    assert simulate_portfolio(params) == risk
    assert 0 < risk.value_at_risk <= risk.expected_shortfall
    assert 0 < risk.probability_of_loss < 1
    assert risk.worst_drawdown_p95 > 0
    with pytest.raises(ValueError, match="weights"):
        PortfolioRiskParams(assets=2, weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="weights: 1 given for 2 assets"):
        PortfolioRiskParams(assets=2, weights=(1.0,))


def test_the_risk_job_stops_when_cancelled() -> None:
    params = PortfolioRiskParams(assets=2, paths=100_000, horizon_days=20)
    calls: list[float] = []

    def write(pct: float, _msg: str) -> bool:
        calls.append(pct)
        return pct > 0  # cancel requested as soon as work started

    with pytest.raises(JobCancelled):
        portfolio_risk(params, Reporter(write, min_interval_s=0))
    assert calls[-1] < 100
    done = portfolio_risk(
        PortfolioRiskParams(assets=2, paths=2_000, horizon_days=5),
        Reporter(lambda _p, _m: False),
    )
    assert done["paths"] == 2_000
