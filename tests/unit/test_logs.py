"""Logs are JSON lines with timestamp, level, event, logger and the trace id of the context."""

from __future__ import annotations

import io
import json
import logging

from stalwart.core.logs import configure_logging, current_trace_id, get_logger, log_error, trace
from stalwart.errors import StalwartError


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_required_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    with trace("t-123", page="home"):
        get_logger("stalwart.test").info("hello", answer=42)
        logging.getLogger("thirdparty").warning("from stdlib")
    get_logger("stalwart.test").debug("filtered out")
    lines = _lines(out)
    assert [line["event"] for line in lines] == ["hello", "from stdlib"]
    for line in lines:
        assert {"timestamp", "level", "event", "logger", "trace_id"} <= line.keys()
        assert line["trace_id"] == "t-123"
        assert line["page"] == "home"
        assert str(line["timestamp"]).endswith("Z")
    assert lines[0]["answer"] == 42
    assert (lines[1]["logger"], lines[1]["level"]) == ("thirdparty", "warning")


def test_trace_ids_are_fresh_per_block_and_gone_after() -> None:
    with trace() as first:
        assert current_trace_id() == first
    with trace() as second:
        assert second != first
    assert current_trace_id() is None


def test_log_error_records_stack_and_context_and_returns_an_id() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    try:
        raise StalwartError("disk on fire", "call the fire brigade")
    except StalwartError as err:
        with trace("t-err"):
            error_id = log_error(err, {"form": "project"})
    (line,) = _lines(out)
    assert line["error_id"] == error_id
    assert len(error_id) == 12
    assert line["error_type"] == "StalwartError"
    assert "disk on fire" in str(line["error"])
    assert "Traceback" in str(line["stack"])
    assert "test_log_error" in str(line["stack"])
    assert (line["form"], line["trace_id"], line["level"]) == ("project", "t-err", "error")


def test_text_renderer_for_people() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=False, stream=out)
    get_logger("x").info("readable")
    assert "readable" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")
