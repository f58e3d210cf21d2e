"""One trace id per interaction, in a real server: its log lines, its audit row, its job.

A tab (Streamlit's websocket protocol, as a browser speaks it) types a name and presses Save in
one interaction; the audit row that Save wrote carries the trace id of that interaction's log
lines. Then Start on the job demo: the job row and the job's own log lines (a worker thread,
later) carry the trace id of the interaction that enqueued it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from stalwart.core.database import DB
from stalwart.core.logs import LINE_FIELDS
from stalwart.models.audit import AuditEntry
from stalwart.models.job import JobRecord
from tests.e2e.conftest import LiveApp, LiveAppFactory, rerun_over_websocket

#: a bound so that a job that never ends fails the test; not a performance claim
JOB_BOUND_S = 60


@pytest.fixture
def server(live_app_factory: LiveAppFactory) -> LiveApp:
    return live_app_factory("sqlite", STALWART_JOBS_POLL_INTERVAL_S="0.1")


def _widget_id(msgs: list[ForwardMsg], kind: str, key: str) -> str:
    for m in msgs:
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
            element = m.delta.new_element
            if element.WhichOneof("type") == kind:
                widget_id = str(getattr(element, kind).id)
                if key in widget_id:
                    return widget_id
    raise AssertionError(f"no {kind} with key {key!r} drawn")


def _interact(query: str, *widgets: tuple[str, str, Any]) -> Callable[[list[ForwardMsg]], BackMsg]:
    """The second run: ``widgets`` (kind, key, value; a button is triggered) in one BackMsg."""

    def answer(first_run: list[ForwardMsg]) -> BackMsg:
        back = BackMsg()
        back.rerun_script.query_string = query
        for kind, key, value in widgets:
            state = back.rerun_script.widget_states.widgets.add()
            state.id = _widget_id(first_run, kind, key)
            if kind == "button":
                state.trigger_value = True
            else:
                state.string_value = value
        return back

    return answer


def _log_lines(app: LiveApp) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in app.logs().splitlines() if line.strip()]
    for line in lines:
        assert set(LINE_FIELDS) <= line.keys(), line
    return lines


def test_a_save_writes_an_audit_row_with_the_trace_id_of_its_log_lines(server: LiveApp) -> None:
    rerun_over_websocket(
        server.port,
        "page=form-demo",
        then=_interact(
            "page=form-demo",
            ("text_input", "sw__project-brief-1__name", "Traced name"),
            ("button", "swc__project-brief-1__save", True),
        ),
    )
    db = DB(server.db_url)
    try:
        with db.unit_of_work(read_only=True) as uow:
            rows = uow.session.execute(
                select(AuditEntry.action, AuditEntry.trace_id).where(
                    AuditEntry.entity_id.contains("project_brief:1")
                )
            ).all()
    finally:
        db.dispose()
    saved = [row for row in rows if row.action != "denied"]
    assert saved, f"Save wrote no audit row: {rows}"
    trace_id = saved[-1].trace_id
    assert trace_id
    lines = [line for line in _log_lines(server) if line["trace_id"] == trace_id]
    # the interaction's own line, written by the Save (the run then reruns the app for "Saved")
    (saved_line,) = [line for line in lines if line["event"] == "form saved"]
    assert (saved_line["page"], saved_line["form"]) == ("form-demo", "project_brief:1")
    assert saved_line["span_id"]
    assert saved_line["session"]
    assert all(line["user"] is None or line["user"].startswith("user:") for line in lines)


def test_a_job_logs_with_the_trace_id_of_the_interaction_that_enqueued_it(
    server: LiveApp,
) -> None:
    rerun_over_websocket(
        server.port, "page=job-demo", then=_interact("page=job-demo", ("button", "jd-start", True))
    )
    db = DB(server.db_url)
    try:
        deadline = time.monotonic() + JOB_BOUND_S
        while True:
            with db.unit_of_work(read_only=True) as uow:
                jobs = uow.session.execute(select(JobRecord.id, JobRecord.trace_id)).all()
            lines = _log_lines(server)
            job_lines = [line for line in lines if jobs and line.get("job_id") == jobs[0].id]
            if any(line["event"] == "job run ended" for line in job_lines):
                break
            assert time.monotonic() < deadline, f"the job did not finish: {jobs}"
            time.sleep(0.2)
    finally:
        db.dispose()
    ((_job_id, trace_id),) = jobs
    in_interaction = [
        line for line in lines if line["trace_id"] == trace_id and line["page"] == "job-demo"
    ]
    assert any(line["event"] == "page rendered" for line in in_interaction)
    # enqueued (in the interaction), claimed and run (by a worker thread, later): one trace
    assert {"job enqueued", "job claimed", "job run ended"} <= {line["event"] for line in job_lines}
    assert {line["trace_id"] for line in job_lines} == {trace_id}
    # the job's attempt is a unit of work of its own: another span than the interaction's
    attempt = [line for line in job_lines if line["event"] == "job run ended"]
    assert {line["span_id"] for line in attempt}.isdisjoint(
        {line["span_id"] for line in in_interaction}
    )


def test_a_request_with_traceparent_is_logged_under_its_trace_id(server: LiveApp) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = httpx.get(
        f"{server.url}/readyz",
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        timeout=10,
    )
    assert response.headers["x-trace-id"] == trace_id
    forged = httpx.get(f"{server.url}/healthz", headers={"traceparent": "00-evil-x-01"}, timeout=10)
    assert forged.headers["x-trace-id"] != "evil"
    deadline = time.monotonic() + 10
    while not any(line["trace_id"] == trace_id for line in _log_lines(server)):
        assert time.monotonic() < deadline, "no log line of the request carries its trace id"
        time.sleep(0.1)
