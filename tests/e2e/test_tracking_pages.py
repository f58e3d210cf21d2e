"""Tracking in the app: page views once per page shown, the Analytics page's funnel (AppTest),
and a deploy marker per server start (the real server, started twice)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from stalwart.bootstrap import current_app
from stalwart.core.database import DB
from stalwart.core.migrations import head_revision
from stalwart.core.rbac import DEFAULT_ROLES
from stalwart.models import Deployment, Event
from stalwart.models.base import utcnow
from stalwart.services.deployments import record_deployment
from stalwart.web.asgi import SHELL_SCRIPT
from tests.conftest import free_port
from tests.e2e.conftest import app_run, launch, rerun_over_websocket


def tracked(db: DB) -> list[tuple[str, str | None, str | None]]:
    """Every event as (name, page, session pseudonym), oldest first."""
    assert current_app().tracker.flush()
    with db.get_conn() as conn:
        rows = conn.execute(select(Event.name, Event.page, Event.session).order_by(Event.id))
        return [(name, page, session) for name, page, session in rows]


def test_a_page_view_is_tracked_once_per_page_shown(app_test: AppTest) -> None:
    at = app_test.run()  # home
    at.run()  # a rerun of the same page (a widget, a timer): no new view
    at.query_params["page"] = "form-demo"
    at.run()
    at.run()
    at.query_params["page"] = "home"
    at.run()
    assert not at.exception

    views = tracked(current_app().db)
    assert [(name, page) for name, page, _ in views] == [
        ("page.view", "home"),
        ("page.view", "form-demo"),
        ("page.view", "home"),
    ]
    (session,) = {session for _, _, session in views}
    assert session is not None
    assert session.startswith("session:")


def test_a_new_tab_is_a_new_page_view(app_test: AppTest) -> None:
    app_test.run()
    AppTest.from_file(SHELL_SCRIPT, default_timeout=30).run()  # another Streamlit session

    assert [(n, p) for n, p, _ in tracked(current_app().db)] == [("page.view", "home")] * 2


def test_the_analytics_page_shows_a_funnel_and_the_deployments(app_test: AppTest) -> None:
    ctx = current_app()
    tracker = ctx.tracker
    start = utcnow() - timedelta(hours=1)
    journeys = {
        "ann": ["home", "form-demo", "save"],
        "bob": ["home", "form-demo"],
        "cyd": ["home"],
    }
    for name, steps in journeys.items():
        actor = DEFAULT_ROLES.principal(
            user_id=1, username=name, role="editor", session_id=name * 21 + "x"
        )
        for minute, step in enumerate(steps):
            when = start + timedelta(minutes=minute)
            if step == "save":
                tracker.record("form.save", {"form_id": "brief:1"}, actor=actor, at=when)
            else:
                tracker.record("page.view", actor=actor, page=step, at=when)
    deployed = record_deployment(ctx.db)
    assert deployed is not None

    app_test.query_params["page"] = "analytics"
    at = app_test.run()
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Analytics"
    steps = at.multiselect(key="analytics-steps-7 days")
    steps.set_value(["page.view · home", "page.view · form-demo", "form.save"])
    at = steps.run()  # type: ignore[assignment]

    assert not at.exception
    funnel = at.dataframe[0].value
    assert list(funnel["step"]) == [
        "1. page.view · home",
        "2. page.view · form-demo",
        "3. form.save",
    ]
    assert list(funnel["sessions"]) == [3, 2, 1]
    assert list(funnel["from previous"]) == ["", "67%", "50%"]
    assert list(funnel["from first"]) == ["100%", "67%", "33%"]
    assert len(at.get("vega_lite_chart")) == 1  # the bar chart
    deployments = at.dataframe[-1].value
    assert list(deployments["commit"]) == [deployed.commit[:12]]
    assert list(deployments["schema"]) == [head_revision()]


def test_the_analytics_page_of_a_new_install_renders(app_test: AppTest) -> None:
    app_test.query_params["page"] = "analytics"
    at = app_test.run()

    assert not at.exception
    assert not at.error
    # No start recorded (AppTest has no lifespan); at most this very view is an event.
    assert "No app start recorded in this window." in [c.value for c in at.caption]
    at = at.segmented_control(key="analytics-window").set_value("24 hours").run()
    assert not at.exception
    assert not at.error


def deployments_in(data_dir: Path) -> list[tuple[int, str, str | None]]:
    db = DB(f"sqlite:///{data_dir / 'stalwart.db'}")
    try:
        with db.get_conn() as conn:
            rows = conn.execute(
                select(Deployment.pid, Deployment.commit, Deployment.migration_head).order_by(
                    Deployment.id
                )
            )
            return [(pid, commit, head) for pid, commit, head in rows]
    finally:
        db.dispose()


def test_each_server_start_records_one_deployment(tmp_path: Path) -> None:
    port = free_port()
    commit = "abcdef0123456789abcdef0123456789abcdef01"
    srv = launch(app_run(port), port, tmp_path, STALWART_COMMIT=commit)
    try:
        first_pid = srv.pid
        rerun_over_websocket(port)  # script runs are not starts
        rerun_over_websocket(port, "page=jobs")
        assert deployments_in(tmp_path / "data") == [(first_pid, commit, head_revision())]
        srv.stop()
        srv.start()
        second_pid = srv.pid
    finally:
        srv.stop()

    assert deployments_in(tmp_path / "data") == [
        (first_pid, commit, head_revision()),
        (second_pid, commit, head_revision()),
    ]
    assert '"deployment recorded"' in srv.logs()
