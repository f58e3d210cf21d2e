"""Every log line has the same fields; one trace id per interaction; foreign records are JSON too.

Also the suite-wide log check itself (tests/log_check.py): it must catch a bad line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stalwart import __version__
from stalwart.core.alerts import WebhookSender
from stalwart.core.logs import (
    LINE_FIELDS,
    configure_logging,
    current_trace_id,
    ensure_trace,
    get_logger,
    interaction,
    trace,
    traceparent,
)
from stalwart.core.pii import PIIMasker
from tests.log_check import LogCheck, line_problem

KEY = "unit-test-secret-key-0123456789abcdef"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """Our JSON chain writing into a buffer; stdout again afterwards."""
    stream = io.StringIO()
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    configure_logging("DEBUG", json=True, stream=stream, pii_key=KEY)
    yield stream
    configure_logging("INFO", json=True)
    sys.excepthook, threading.excepthook, sys.unraisablehook = hooks


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_has_every_field_in_order_and_nulls_where_none_applies(
    out: io.StringIO,
) -> None:
    get_logger("stalwart.test").info("outside")
    with interaction(page="home", session="abcd1234", user="mia"):
        get_logger("stalwart.test").info("inside", answer=42)
    outside, inside = _lines(out)
    for line in (outside, inside):
        assert list(line)[: len(LINE_FIELDS)] == list(LINE_FIELDS)
        assert line["version"] == __version__
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["ts"])
    assert {
        k: outside[k] for k in ("trace_id", "span_id", "session", "page", "user")
    } == dict.fromkeys(("trace_id", "span_id", "session", "page", "user"))
    assert re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", inside["span_id"])
    assert (inside["page"], inside["session"], inside["answer"]) == ("home", "abcd1234", 42)


def test_the_user_is_the_keyed_pseudonym_the_tracking_events_use(out: io.StringIO) -> None:
    with trace(user="mia"):
        get_logger("stalwart.test").info("who")
    (line,) = _lines(out)
    assert line["user"] == PIIMasker("hash", KEY).pseudonym("user", "mia")
    assert "mia" not in out.getvalue()


def test_callback_body_and_fragment_of_one_run_share_a_trace_id_then_it_is_unbound(
    out: io.StringIO,
) -> None:
    log = get_logger("stalwart.test")
    # a run: a widget's callback (before the script body), the body, a fragment in it
    callback_tid = ensure_trace(page="form-demo")
    log.info("callback")
    with interaction() as body_tid:
        with interaction(page="form-demo", session="s1", user="mia") as fragment_tid:
            log.info("fragment")
        log.info("body")
    assert current_trace_id() is None  # nothing left for the next run on this thread
    # the next run: a fragment rerun alone, with its own callback
    ensure_trace()
    log.info("callback 2")
    with interaction(page="form-demo") as rerun_tid:
        log.info("fragment rerun")
    assert current_trace_id() is None
    first, second, third, fourth, fifth = _lines(out)
    assert callback_tid == body_tid == fragment_tid
    assert {first["trace_id"], second["trace_id"], third["trace_id"]} == {callback_tid}
    assert {first["span_id"], second["span_id"], third["span_id"]} == {first["span_id"]}
    assert (second["page"], second["user"][:5], third["page"]) == (
        "form-demo",
        "user:",
        "form-demo",
    )
    assert fourth["trace_id"] == fifth["trace_id"] == rerun_tid != callback_tid
    assert fourth["span_id"] != first["span_id"]


def test_a_run_without_callback_gets_a_new_trace_id_and_span_per_unit(out: io.StringIO) -> None:
    with interaction() as first:
        pass
    with interaction() as second:
        pass
    with trace(first, job_id="j1") as job_tid:  # a job attempt: the enqueuer's trace, new span
        get_logger("stalwart.test").info("job")
    assert first != second
    assert job_tid == first
    (line,) = _lines(out)
    assert line["trace_id"] == first
    assert line["span_id"]


def test_a_streamlit_logger_record_keeps_its_traceback(out: io.StringIO) -> None:
    from streamlit.logger import get_logger as streamlit_logger

    configure_logging("DEBUG", json=True, stream=out, pii_key=KEY)  # Streamlit imported now
    logger = streamlit_logger("streamlit.test_module_made_later")
    assert logger.handlers == []
    assert logger.propagate
    try:
        raise ValueError("mail ann@example.com")
    except ValueError:
        logger.error("script failed", exc_info=True)
    (line,) = _lines(out)
    assert (line["logger"], line["event"], line["level"]) == (
        "streamlit.test_module_made_later",
        "script failed",
        "error",
    )
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ValueError: mail [email]" in line["exception"]
    assert set(LINE_FIELDS) <= line.keys()


def test_warnings_and_uncaught_exceptions_are_json_with_tracebacks(out: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)

    def fail() -> None:
        raise RuntimeError("in a thread")

    worker = threading.Thread(target=fail, name="worker-1")
    worker.start()
    worker.join()
    try:
        raise KeyError("main")
    except KeyError:
        sys.excepthook(*sys.exc_info())
    warned, in_thread, in_main = _lines(out)
    assert (warned["logger"], warned["level"]) == ("py.warnings", "warning")
    assert "DeprecationWarning: old API" in warned["event"]
    assert in_thread["event"] == "uncaught exception in thread worker-1"
    assert "RuntimeError: in a thread" in in_thread["exception"]
    assert in_main["level"] == "critical"
    assert "KeyError: 'main'" in in_main["exception"]
    for line in (warned, in_thread, in_main):
        assert line_problem(json.dumps(line)) is None


def test_traceparent_carries_the_bound_trace_id_and_a_new_span() -> None:
    with trace() as tid:
        header = traceparent()
        again = traceparent()
    version, trace_id, parent, flags = header.split("-")
    assert (version, trace_id, flags) == ("00", tid, "01")
    assert re.fullmatch(r"[0-9a-f]{16}", parent)
    assert again != header
    with trace("not-w3c"):
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", traceparent())


def test_the_alert_webhook_post_sends_traceparent() -> None:
    receiver = _Receiver()
    try:
        with trace() as tid:
            WebhookSender(f"{receiver.url}/hook", timeout_s=2, attempts=1).send({"alert": "test"})
    finally:
        receiver.close()
    (header,) = receiver.seen
    assert header is not None
    assert header.split("-")[1] == tid


class _Receiver:
    """A local HTTP server that answers 200 with ``{}`` and keeps each request's traceparent."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.command == "POST":
                    self.rfile.read(int(self.headers["Content-Length"]))
                seen.append(self.headers.get("traceparent"))
                body = b'{"status": "ok", "checks": {}}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_app_health_url_sends_traceparent() -> None:
    from typer.testing import CliRunner

    from stalwart.cli.main import app

    receiver = _Receiver()
    try:
        result = CliRunner().invoke(app, ["health", "--url", f"{receiver.url}/readyz", "--json"])
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    (header,) = receiver.seen
    assert header is not None
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", header)


# -- the suite-wide check ---------------------------------------------------------------------


def _good(**extra: Any) -> str:
    return json.dumps({**dict.fromkeys(LINE_FIELDS), "event": "ok", **extra})


def test_the_log_check_catches_a_non_json_line_and_a_missing_field(tmp_path: Path) -> None:
    check = LogCheck()
    check.check([_good(), "", _good(answer=1)], "in-process")
    assert (check.checked, check.bad, check.report()) == (2, 0, [])
    server_log = tmp_path / "server.log"
    partial = json.dumps({"event": "no fields"})
    server_log.write_text(f"{_good()}\n  You can now view your Streamlit app\n{partial}\n[1, 2]\n")
    check.watch(server_log, "server")
    check.check_files()
    assert check.bad == 3
    first, second, third = check.offences
    assert (first.number, first.problem) == (2, "not JSON")
    assert str(server_log) in first.source
    assert "You can now view" in str(first)
    assert second.problem.startswith("missing ts, level")
    assert third.problem == "not a JSON object"
    assert check.report()[0].startswith("log check: 3 of 6 log line(s)")


def test_the_log_check_reads_only_log_like_lines_of_cli_stderr() -> None:
    check = LogCheck()
    stderr = "error: port 8501 is in use; pass --port\nTraceback (most recent call last):\n"
    check.check(stderr.splitlines(), "stderr of `app run`", only_log_like=True)
    check.check(["INFO: started", _good()], "stderr of `app db`", only_log_like=True)
    assert [o.line for o in check.offences] == [
        "Traceback (most recent call last):",
        "INFO: started",
    ]


def test_a_bad_line_fails_the_session(tmp_path: Path) -> None:
    import tests.log_check as plugin

    class Config:  # a run without pytest-xdist (or its controller): no workeroutput
        pass

    class Session:
        exitstatus: int = pytest.ExitCode.OK
        config = Config()

    saved = plugin._check
    plugin._check = LogCheck()
    try:
        bad = tmp_path / "worker.log"
        bad.write_text("worker started\n")
        plugin.watch_log_file(bad, "job worker")
        session = Session()
        plugin.pytest_sessionfinish(session, pytest.ExitCode.OK)  # type: ignore[arg-type]
        assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
        shown: list[str] = []

        class Reporter:
            def section(self, *_args: Any, **_kwargs: Any) -> None:
                pass

            def write_line(self, line: str) -> None:
                shown.append(line)

        plugin.pytest_terminal_summary(Reporter())
        assert f"job worker {bad}:1: not JSON: worker started" in shown[1]
    finally:
        plugin._check = saved


def test_an_xdist_worker_hands_its_lines_to_the_controller_which_fails_the_run(
    tmp_path: Path,
) -> None:
    import tests.log_check as plugin

    saved = plugin._check
    try:
        plugin._check = LogCheck()
        bad = tmp_path / "server.log"
        bad.write_text('{"not": "all fields"}\nplain text\n')
        plugin.watch_log_file(bad, "app run")

        class WorkerConfig:
            workeroutput: dict[str, Any] = {}

        class WorkerSession:
            exitstatus: int = pytest.ExitCode.OK
            config = WorkerConfig()

        worker = WorkerSession()
        plugin.pytest_sessionfinish(worker, pytest.ExitCode.OK)  # type: ignore[arg-type]
        handed = WorkerConfig.workeroutput["log_check"]
        assert (handed["checked"], handed["bad"]) == (2, 2)
        assert worker.exitstatus == pytest.ExitCode.OK  # the controller decides

        plugin._check = LogCheck()  # the controller's own, empty

        class Node:
            workeroutput = {"log_check": handed}

        plugin.pytest_testnodedown(Node(), None)
        assert (plugin._check.checked, plugin._check.bad) == (2, 2)
        assert [o.problem for o in plugin._check.offences] == [
            "missing ts, level, event, logger, trace_id, span_id, session, page, user, version",
            "not JSON",
        ]

        class ControllerSession:
            exitstatus: int = pytest.ExitCode.OK
            config = object()

        controller = ControllerSession()
        plugin.pytest_sessionfinish(controller, pytest.ExitCode.OK)  # type: ignore[arg-type]
        assert controller.exitstatus == pytest.ExitCode.TESTS_FAILED
    finally:
        plugin._check = saved


def test_in_process_json_lines_are_collected(out: io.StringIO) -> None:
    import tests.log_check as plugin

    before = plugin._check.checked
    get_logger("stalwart.test").info("counted")
    logging.getLogger("thirdparty").warning("counted too")
    assert plugin._check.checked == before + 2


def _traced_app() -> None:
    """A script like the shell: a traced callback, the body in an interaction, a fragment."""
    import streamlit as st

    from stalwart.core.logs import current_trace_id, interaction
    from stalwart.widgets.interactions import fragment, traced

    seen = st.session_state.setdefault("seen", [])

    def pressed() -> None:  # registered by the previous run: reads this run's list
        st.session_state["seen"].append(("callback", current_trace_id()))

    def form() -> None:
        seen.append(("fragment", current_trace_id()))

    with interaction(page="home"):
        seen.append(("body", current_trace_id()))
        st.button("Go", key="go", on_click=traced(pressed))
        fragment(form)()
    seen.append(("after", current_trace_id()))


def test_a_traced_callback_the_body_and_a_fragment_share_the_run_s_trace_id() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_traced_app).run()
    first = dict(at.session_state["seen"])
    assert first["body"] == first["fragment"]
    assert first["after"] is None
    at.session_state["seen"] = []
    at.button(key="go").click().run()
    second = at.session_state["seen"]
    assert [kind for kind, _ in second] == ["callback", "body", "fragment", "after"]
    ids = {tid for kind, tid in second if kind != "after"}
    assert len(ids) == 1
    assert ids != {first["body"]}
    assert None not in ids
    assert second[-1] == ("after", None)


def test_an_exception_python_ignores_is_a_json_line_with_its_traceback(out: io.StringIO) -> None:
    class Leaky:
        def __del__(self) -> None:
            raise RuntimeError("in a finalizer")

    Leaky()  # collected at once: Python reports "Exception ignored in ..." to the hook
    (line,) = _lines(out)
    assert line["level"] == "warning"
    assert line["event"].startswith("exception ignored in")
    assert "RuntimeError: in a finalizer" in line["exception"]
    assert line_problem(json.dumps(line)) is None
