"""The System page (AppTest, admin): health checks, the charts over time with the deployments on
them, jobs, sessions, the deployments list and recent errors as expanders with their stack.
A real server samples its metrics (``stalwart.monitoring``). That non-admins are refused the page
and do not see it in the navigation is checked on a real server with sign-in (test_auth.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from stalwart.bootstrap import current_app
from stalwart.core.database import DB
from stalwart.core.logs import log_error, trace
from stalwart.core.metric_history import MetricSampler
from stalwart.models import MetricSample
from stalwart.services.deployments import record_deployment
from tests.conftest import free_port
from tests.e2e.conftest import app_run, launch, rerun_over_websocket


def frame(at: AppTest, column: str) -> Any:
    """The first dataframe shown that has ``column``."""
    for shown in at.dataframe:
        if column in shown.value.columns:
            return shown.value
    raise AssertionError(f"no dataframe with a {column!r} column")


def test_the_system_page_shows_health_charts_deployments_and_errors(app_test: AppTest) -> None:
    ctx = current_app()
    sampler = MetricSampler(
        ctx.db, ctx.metrics.instruments, interval_s=60, retention=timedelta(days=14)
    )
    deployed = record_deployment(ctx.db)
    assert deployed is not None
    for _ in range(4):
        ctx.metrics.observe_interaction("home", "full", 0.004)
    try:
        raise RuntimeError("the printer is on fire for ann.smith@example.com")
    except RuntimeError as err:
        with trace("b" * 32):
            error_id = log_error(err, {"page": "form-demo"})
    assert ctx.db.flush_behind()
    sampler.sample()

    app_test.query_params["page"] = "system"
    at = app_test.run()

    assert not at.exception
    assert at.title[0].value == "System"
    health = frame(at, "check")
    assert {"database", "migrations", "filesystem", "cache", "jobs"} <= set(health["check"])
    assert set(health["status"]) <= {"ok", "skipped"}
    assert any("Ready" in s.value for s in at.success)
    charts = at.get("vega_lite_chart")  # p95, interactions, errors, DB retries
    assert len(charts) == 4
    for chart in charts:  # each with the deployments as rules, the commit in their tooltips
        spec = chart.proto.spec + "".join(str(d) for d in chart.proto.datasets)
        assert deployed.commit[:12] in spec
        assert '"rule"' in spec
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Interactions"] == "4"
    assert metrics["Errors"] == "1"
    assert list(frame(at, "commit")["commit"]) == [deployed.commit[:12]]
    assert "status" in frame(at, "jobs").columns

    (expander,) = [e for e in at.expander if error_id in e.label]
    assert "RuntimeError" in expander.label
    assert "ann.smith@example.com" not in expander.label
    (stack,) = expander.code
    assert "Traceback" in stack.value
    assert "ann.smith@example.com" not in stack.value
    assert any("b" * 32 in c.value for c in expander.caption)

    at = at.text_input(key="system-error-id").input(error_id).run()
    assert not at.exception
    assert [e.label for e in at.expander if error_id in e.label]


def test_the_system_page_of_a_new_install_renders(app_test: AppTest) -> None:
    app_test.query_params["page"] = "system"
    at = app_test.run()

    assert not at.exception
    assert not at.error
    assert any("No metric samples" in i.value for i in at.info)
    at = at.segmented_control(key="system-window").set_value("1 hour").run()
    assert not at.exception
    at = at.text_input(key="system-error-id").input("nosuchid").run()
    assert "No error with this id." in [c.value for c in at.caption]


def test_the_system_page_says_degraded_when_only_the_cache_s_redis_fails(
    app_test: AppTest, monkeypatch: Any
) -> None:
    monkeypatch.setenv("STALWART_CACHE_BACKEND", "redis")
    monkeypatch.setenv("STALWART_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app_test.query_params["page"] = "system"
    at = app_test.run()

    assert not at.exception
    health = frame(at, "check").set_index("check")
    assert health.loc["cache", "status"] == "error"
    assert not health.loc["cache", "critical"]
    assert health.loc["database", "status"] == "ok"
    assert any("Ready, degraded" in w.value for w in at.warning)
    assert not at.success


def sampled(data_dir: Path) -> tuple[int, int]:
    """(samples written, interactions they count) in a server's SQLite database."""
    db = DB(f"sqlite:///{data_dir / 'stalwart.db'}")
    try:
        with db.get_conn() as conn:
            count, interactions = conn.execute(
                select(func.count(), func.coalesce(func.sum(MetricSample.interactions), 0))
            ).one()
            return int(count), int(interactions)
    finally:
        db.dispose()


def test_a_running_server_samples_its_metrics_and_once_more_when_it_stops(
    tmp_path: Path,
) -> None:
    port = free_port()
    # Far longer than the test: the only sample is the one written when the server stops.
    srv = launch(app_run(port), port, tmp_path, STALWART_METRICS_SAMPLE_INTERVAL_S="3600")
    try:
        rerun_over_websocket(port)
        rerun_over_websocket(port, "page=jobs")
        assert sampled(tmp_path / "data") == (0, 0)
    finally:
        srv.stop()

    assert sampled(tmp_path / "data") == (1, 2)
