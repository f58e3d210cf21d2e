"""Tracking and deploy markers on real databases: events with pseudonyms and trace ids, funnels
counted by hand, the services' events, failures that stay away from the caller, deployments."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from stalwart.core.access import AccessControl
from stalwart.core.build import build_commit
from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.logs import configure_logging, trace
from stalwart.core.migrations import head_revision, migrate
from stalwart.core.rbac import DEFAULT_ROLES, Principal
from stalwart.core.tracking import (
    Tracker,
    current_tracker,
    install_tracker,
    session_key,
    track,
)
from stalwart.errors import PermissionDeniedError
from stalwart.models import Deployment, Event, SessionRecord
from stalwart.repositories.tracking import FunnelStep
from stalwart.services.analytics_service import AnalyticsService
from stalwart.services.deployments import recent_deployments, record_deployment
from stalwart.services.export_service import ExportService
from stalwart.services.form_service import FormService
from stalwart.services.job_service import JobService
from tests.conftest import editor, viewer
from tests.job_functions import add

KEY = "tracking-test-key-0123456789abcdef0123456789"
LOGIN_SESSION = "f" * 64


@pytest.fixture
def tracker(db: DB) -> Iterator[Tracker]:
    """A tracker on ``db``, installed for ``track`` during the test."""
    before = current_tracker()
    made = Tracker(db, KEY)
    install_tracker(made)
    yield made
    install_tracker(before)


def events(db: DB) -> list[Event]:
    with db.unit_of_work(read_only=True) as uow:
        rows = list(uow.session.execute(select(Event).order_by(Event.id)).scalars())
        uow.session.expunge_all()  # usable after the read's rollback
        return rows


def signed_in(name: str, role: str = "editor") -> Principal:
    return DEFAULT_ROLES.principal(
        user_id=7, username=name, role=role, session_id=LOGIN_SESSION[: 64 - len(name)] + name
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- track ---------------------------------------------------------------------------------


def test_track_records_pseudonyms_the_trace_id_and_the_page(db: DB, tracker: Tracker) -> None:
    alice = signed_in("alice")
    with trace(page="form-demo") as trace_id:
        track(
            "form.save", {"form_id": "brief:1", "contact_email": "alice@example.com"}, actor=alice
        )
    assert tracker.flush()

    (row,) = events(db)
    assert (row.name, row.page, row.trace_id) == ("form.save", "form-demo", trace_id)
    assert row.user_pseudonym == tracker.pseudonym("user", "alice")
    assert row.session == tracker.pseudonym("session", str(alice.session_id))
    assert row.user_pseudonym.startswith("user:")
    assert row.session.startswith("session:")
    # Neither the username nor the login session's id is stored, nor the e-mail address.
    stored = json.dumps([row.session, row.user_pseudonym, row.props])
    assert "alice" not in stored
    assert str(alice.session_id) not in stored
    assert row.props["form_id"] == "brief:1"
    assert row.props["contact_email"].startswith("email:")
    assert row.ts.tzinfo is not None


def test_pseudonyms_depend_on_the_key(db: DB) -> None:
    one, other = Tracker(db, KEY), Tracker(db, KEY + "-rotated")
    assert one.pseudonym("user", "alice") == Tracker(db, KEY).pseudonym("user", "alice")
    assert one.pseudonym("user", "alice") != other.pseudonym("user", "alice")
    assert one.pseudonym("user", "alice") != one.pseudonym("user", "bob")


def test_the_session_is_the_login_session_else_the_browser_else_none() -> None:
    assert session_key(signed_in("alice")) == signed_in("alice").session_id
    # Sign-in off: the principal is named after the browser's identity, and has no login.
    assert session_key(editor("0123456789ab")) == "0123456789ab"
    assert session_key(Principal.system()) is None
    assert session_key(Principal.anonymous()) is None


def test_an_event_without_actor_or_context_has_no_session_user_or_trace(
    db: DB, tracker: Tracker
) -> None:
    track("job.start", {"function": "x"})
    assert tracker.flush()
    (row,) = events(db)
    assert (row.session, row.user_pseudonym, row.trace_id, row.page) == (None, None, None, None)


def test_many_events_from_many_threads_are_all_written(db: DB, tracker: Tracker) -> None:
    import threading

    def burst(n: int) -> None:
        for i in range(50):
            track("page.view", {"n": n, "i": i}, actor=signed_in(f"user{n}"), page="home")

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.flush()
    rows = events(db)
    assert len(rows) == 200
    assert {(r.props["n"], r.props["i"]) for r in rows} == {
        (n, i) for n in range(4) for i in range(50)
    }
    assert tracker.pending() == 0


def test_bad_events_are_logged_and_never_raise(db: DB, tracker: Tracker) -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    try:
        track("Not A Name!", actor=signed_in("alice"))
        track("form.save", circular, actor=signed_in("alice"))
        track("form.save", {"blob": "x" * 5000}, actor=signed_in("alice"))
        track("form.save", {"ok": True}, actor=signed_in("alice"))
        assert tracker.flush()
    finally:
        configure_logging("INFO", json=True)
    assert [row.props for row in events(db)] == [{"ok": True}]
    refused = [r for r in json_lines(out.getvalue()) if r["event"] == "event not tracked"]
    assert [r["tracked"] for r in refused] == ["Not A Name!", "form.save", "form.save"]
    assert "ValueError" in refused[0]["error"]


def test_a_database_that_cannot_take_events_does_not_break_the_caller(raw_db: DB) -> None:
    # A schema before the events table: every insert fails, after the caller has moved on.
    migrate(raw_db, "0004")
    before = current_tracker()
    tracker = Tracker(raw_db, KEY)
    install_tracker(tracker)
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    forms = FormService(raw_db)
    raw_db.run_tx(lambda uow: uow.session.add(SessionRecord(id="sid", page="home", params={})))
    try:
        outcome = forms.save(
            "sid", "f:1", {"name": ""}, actor=signed_in("alice"), idempotency_key="k1"
        )
        assert tracker.flush()
    finally:
        configure_logging("INFO", json=True)
        install_tracker(before)
    assert outcome.version == 1  # the save went through
    failures = [r for r in json_lines(out.getvalue()) if r["event"] == "write-behind failed"]
    assert [r["key"] for r in failures] == ["events"]


def test_a_full_backlog_drops_the_oldest_events(db: DB) -> None:
    import threading

    tracker = Tracker(db, KEY, max_pending=3)
    # Hold the write-behind thread so that the events pile up.
    started, release = threading.Event(), threading.Event()

    def blocking(_uow: Any) -> None:
        started.set()
        assert release.wait(30)

    db.write_behind("blocker", blocking)
    assert started.wait(30)
    for n in range(5):
        tracker.record("page.view", {"n": n}, page="home")
    assert tracker.pending() == 3
    assert tracker.dropped == 2
    release.set()
    assert tracker.flush()
    assert [row.props["n"] for row in events(db)] == [2, 3, 4]


# --- funnels -------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(hours=1)
HOME = FunnelStep("page.view", "home")
FORM = FunnelStep("page.view", "form-demo")
SAVE = FunnelStep("form.save")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


#: (session, event, page, minutes after the window opens); negative or >= 60 is outside it
JOURNEYS: list[tuple[str | None, str, str | None, float]] = [
    # s1: home, form, save: all three
    ("s1", "page.view", "home", 1), ("s1", "page.view", "form-demo", 2),
    ("s1", "form.save", "form-demo", 3),
    # s2: home, form, no save: two
    ("s2", "page.view", "home", 1), ("s2", "page.view", "form-demo", 5),
    # s3: home, then a save without viewing the form page: one (skipped step two)
    ("s3", "page.view", "home", 1), ("s3", "form.save", None, 4),
    # s4: form before home, then save: home reached at 6, form never after it: one
    ("s4", "page.view", "form-demo", 5), ("s4", "page.view", "home", 6),
    ("s4", "form.save", "form-demo", 7),
    # s5: only a save: none
    ("s5", "form.save", "form-demo", 2),
    # s6: home before the window, form and save inside: none (step one not in the window)
    ("s6", "page.view", "home", -5), ("s6", "page.view", "form-demo", 2),
    ("s6", "form.save", "form-demo", 3),
    # s7: repeats: home, form, form, home, save: all three
    ("s7", "page.view", "home", 1), ("s7", "page.view", "form-demo", 2),
    ("s7", "page.view", "form-demo", 3), ("s7", "page.view", "home", 4),
    ("s7", "form.save", "form-demo", 5),
    # s8: a save before home does not count, the one after does: all three
    ("s8", "form.save", "form-demo", 1), ("s8", "page.view", "home", 2),
    ("s8", "page.view", "form-demo", 3), ("s8", "form.save", "form-demo", 4),
    # s9: home, form in the window, the save after it closed: two
    ("s9", "page.view", "home", 1), ("s9", "page.view", "form-demo", 2),
    ("s9", "form.save", "form-demo", 61),
    # s10: another page between the steps does not matter: all three
    ("s10", "page.view", "home", 1), ("s10", "page.view", "jobs", 2),
    ("s10", "page.view", "form-demo", 3), ("s10", "form.save", "form-demo", 4),
    # no session (the system): never counted
    (None, "page.view", "home", 1), (None, "page.view", "form-demo", 2),
    (None, "form.save", "form-demo", 3),
]  # fmt: skip


@pytest.fixture
def journeys(db: DB) -> DB:
    def insert(uow: Any) -> None:
        for session, name, page, minutes in JOURNEYS:
            uow.session.add(Event(ts=at(minutes), name=name, page=page, session=session, props={}))

    db.run_tx(insert)
    return db


def analytics(db: DB) -> AnalyticsService:
    return AnalyticsService(db, AccessControl(db))


ADMIN = DEFAULT_ROLES.principal(user_id=1, username="root", role="admin")


def test_funnel_counts_sessions_that_reach_each_step_in_order(journeys: DB) -> None:
    rows = analytics(journeys).funnel(ADMIN, [HOME, FORM, SAVE], SINCE, UNTIL)

    # home: s1 s2 s3 s4 s7 s8 s9 s10; form after home: s1 s2 s7 s8 s9 s10;
    # save after that: s1 s7 s8 s10
    assert [row.sessions for row in rows] == [8, 6, 4]
    assert [row.of_previous for row in rows] == [None, 6 / 8, 4 / 6]
    assert [row.of_first for row in rows] == [1.0, 6 / 8, 4 / 8]
    assert [row.step for row in rows] == [HOME, FORM, SAVE]


def test_funnel_in_another_order_and_window(journeys: DB) -> None:
    service = analytics(journeys)
    # form, then home: s4 (5 -> 6) and s7 (2 -> 4); s6's home was before its form
    assert [r.sessions for r in service.funnel(ADMIN, [FORM, HOME], SINCE, UNTIL)] == [8, 2]
    # The save alone: s1 s3 s4 s5 s6 s7 s8 s10 (s9's is outside the window)
    assert [r.sessions for r in service.funnel(ADMIN, [SAVE], SINCE, UNTIL)] == [8]
    # A window from minute 3: home only for s4 (6), s7 (4); then form: none after them
    later = at(3)
    assert [r.sessions for r in service.funnel(ADMIN, [HOME, FORM], later, UNTIL)] == [2, 0]
    # Any page view counts for a step without a page
    any_view = FunnelStep("page.view")
    # (s5 viewed nothing; s9's save is outside the window)
    assert [r.sessions for r in service.funnel(ADMIN, [any_view, SAVE], SINCE, UNTIL)] == [9, 7]
    assert service.funnel(ADMIN, [], SINCE, UNTIL) == []


def test_funnel_after_zero_has_no_conversion(journeys: DB) -> None:
    rows = analytics(journeys).funnel(ADMIN, [FunnelStep("job.start"), SAVE], SINCE, UNTIL)
    assert [(r.sessions, r.of_previous, r.of_first) for r in rows] == [
        (0, None, None),
        (0, None, None),
    ]


def test_step_choices_list_pages_and_event_names(journeys: DB) -> None:
    choices = analytics(journeys).step_choices(ADMIN, SINCE, UNTIL)
    summary = [(c.step.label, c.events, c.sessions) for c in choices]
    # Events in the window (the system's without a session included) and distinct sessions:
    # form-demo views s1 s2 s4 s6 s7 s7 s8 s9 s10 + none; home views s1 s2 s3 s4 s7 s7 s8 s9
    # s10 + none (s6's is before the window); saves s1 s3 s4 s5 s6 s7 s8 s8 s10 + none.
    assert summary == [
        ("page.view · form-demo", 10, 8),
        ("page.view · home", 10, 8),
        ("page.view · jobs", 1, 1),
        ("form.save", 10, 8),
    ]


def test_only_admins_read_funnels(journeys: DB) -> None:
    service = analytics(journeys)
    with pytest.raises(PermissionDeniedError):
        service.funnel(editor("ed"), [HOME], SINCE, UNTIL)
    with pytest.raises(PermissionDeniedError):
        service.step_choices(viewer("vi"), SINCE, UNTIL)
    with pytest.raises(PermissionDeniedError):
        service.deployments(editor("ed"))


# --- the services record their events ------------------------------------------------------


def test_save_apply_enqueue_and_export_are_tracked(db: DB, tracker: Tracker) -> None:
    access = AccessControl(db)
    forms = FormService(db, access=access)
    jobs = JobService(JobQueue(db), access)
    exports = ExportService(access)
    alice = signed_in("alice")
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id="sid", page="home", params={})))
    forms.persist_input("sid", "brief:1", {"name": ""}, "name", "Alpha")

    with trace() as trace_id:
        forms.save("sid", "brief:1", {"name": ""}, actor=alice, idempotency_key="save-1")
        forms.save("sid", "brief:1", {"name": ""}, actor=alice, idempotency_key="save-1")
        forms.apply_form("sid", "brief:1", {"name": ""}, actor=alice)
        job_id = jobs.enqueue(alice, Job.of(add, {"a": 1, "b": 2}))
        exported = exports.csv(alice, [{"a": 1}], what="jobs")
    # Refused actions are not journeys: nothing tracked for them.
    with pytest.raises(PermissionDeniedError):
        forms.save("sid", "brief:1", {}, actor=viewer("vi"), idempotency_key="save-2")
    assert tracker.flush()

    rows = events(db)
    # The replayed save (same idempotency key) is not a second save.
    assert [(r.name, r.props) for r in rows] == [
        ("form.save", {"form_id": "brief:1", "version": 1, "overwrote": False}),
        ("form.apply", {"form_id": "brief:1"}),
        ("job.start", {"function": "tests.job_functions:add", "job_id": job_id}),
        ("data.export", {"what": "jobs", "bytes": len(exported)}),
    ]
    assert {r.trace_id for r in rows} == {trace_id}
    assert {r.user_pseudonym for r in rows} == {tracker.pseudonym("user", "alice")}
    assert {r.session for r in rows} == {tracker.pseudonym("session", str(alice.session_id))}


# --- deployments ---------------------------------------------------------------------------


@pytest.fixture
def commit_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    build_commit.cache_clear()
    yield monkeypatch
    build_commit.cache_clear()


def test_a_start_records_version_commit_schema_host_and_pid(
    db: DB, commit_env: pytest.MonkeyPatch
) -> None:
    commit_env.setenv("STALWART_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    first = record_deployment(db)
    second = record_deployment(db)
    assert first is not None
    assert second is not None

    assert first.commit == "0123456789abcdef0123456789abcdef01234567"
    assert first.migration_head == head_revision()
    assert (first.host, first.pid) == (socket.gethostname(), os.getpid())
    assert first.version
    listed = recent_deployments(db)
    assert [d.id for d in listed] == [second.id, first.id]  # newest first
    assert recent_deployments(db, since=second.started_at) == [second]
    assert recent_deployments(db, limit=1) == [second]


def test_the_commit_comes_from_git_without_the_variable(commit_env: pytest.MonkeyPatch) -> None:
    commit_env.delenv("STALWART_COMMIT", raising=False)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert build_commit() == (head or "unknown")


def test_a_commit_that_is_not_one_is_unknown(commit_env: pytest.MonkeyPatch) -> None:
    commit_env.setenv("STALWART_COMMIT", "$(rm -rf /); echo")
    assert build_commit() == "unknown"


def test_a_schema_without_the_table_logs_and_starts_anyway(raw_db: DB) -> None:
    migrate(raw_db, "0004")
    assert record_deployment(raw_db) is None


def test_init_app_installs_a_tracker_and_shutdown_removes_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stalwart.bootstrap import init_app, shutdown_app
    from stalwart.core.config import AppConfig

    cfg = AppConfig(data_dir=tmp_path / "data", secret_key=KEY)  # type: ignore[arg-type]
    before = current_tracker()
    ctx = init_app(cfg, run_migrations=True)
    try:
        assert current_tracker() is ctx.tracker
        track("page.view", actor=signed_in("alice"), page="home")
    finally:
        shutdown_app()  # writes what is pending before the connections close
    assert current_tracker() is None
    install_tracker(before)
    db = DB(cfg.resolved_database_url)
    try:
        rows = events(db)
        assert [(r.name, r.page) for r in rows] == [("page.view", "home")]
        assert [d.pid for d in recent_deployments(db)] == []  # the lifespan records those
        with db.get_conn() as conn:
            assert conn.execute(select(Deployment.id)).all() == []
    finally:
        db.dispose()
