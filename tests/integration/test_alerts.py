"""The embedded alert dispatcher against a real webhook receiver (a local HTTP server: the
webhook is a third-party edge), driven by real conditions of a real app context."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from stalwart.bootstrap import AppContext, init_app, shutdown_app
from stalwart.core.alerts import (
    AlertDispatcher,
    AlertRule,
    AlertState,
    MetricWindow,
    WebhookError,
    WebhookSender,
    default_rules,
)
from stalwart.core.config import load_config
from stalwart.core.migrations import downgrade, migrate, revision_chain
from stalwart.monitoring import build_alert_dispatcher
from tests.conftest import free_port


class Receiver:
    """A webhook receiver on 127.0.0.1: records each JSON body; answers ``fail_next`` 503s first."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def named(self, alert: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["alert"] == alert]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def app_ctx(tmp_path: Path) -> Iterator[AppContext]:
    """A real app context on a SQLite file, migrated to head."""
    shutdown_app()
    cfg = load_config(data_dir=tmp_path / "data", database_url="", alert_interval_s=0.05)
    ctx = init_app(cfg, run_migrations=True)
    try:
        yield ctx
    finally:
        shutdown_app()


def immediate(dispatcher: AlertDispatcher) -> AlertDispatcher:
    """The same rules without their ``for`` delays, so that a test needs no waiting."""
    dispatcher.rules = [replace(rule, for_s=0) for rule in dispatcher.rules]
    return dispatcher


def fast_sender(url: str) -> WebhookSender:
    return WebhookSender(url, timeout_s=2, attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)


def test_one_firing_message_per_incident_then_one_resolved(
    app_ctx: AppContext, receiver: Receiver
) -> None:
    dispatcher = immediate(build_alert_dispatcher(app_ctx, receiver.url))

    dispatcher.evaluate()
    assert receiver.received == []  # ready: nothing to say

    # A real incident: the schema falls behind the code, so readiness fails.
    downgrade(app_ctx.db, revision_chain()[-2])
    for _ in range(5):
        dispatcher.evaluate()
    firing = receiver.named("ReadinessFailing")
    assert len(firing) == 1
    assert dispatcher.firing == ["ReadinessFailing"]

    migrate(app_ctx.db)
    for _ in range(3):
        dispatcher.evaluate()
    messages = receiver.named("ReadinessFailing")

    assert [m["status"] for m in messages] == ["firing", "resolved"]
    assert dispatcher.firing == []
    first, resolved = messages
    assert first["severity"] == "critical"
    assert "migrations (MigrationError" in first["description"]
    assert first["remediation"]
    assert first["runbook"] == "OPERATIONS.md#alert-readinessfailing"
    assert resolved["started_at"] == first["started_at"]
    assert resolved["resolved_at"] >= resolved["started_at"]
    assert receiver.received == messages  # no other alert fired on the way

    # A second incident is a new firing message.
    downgrade(app_ctx.db, revision_chain()[-2])
    dispatcher.evaluate()
    dispatcher.evaluate()
    assert [m["status"] for m in receiver.named("ReadinessFailing")] == [
        "firing",
        "resolved",
        "firing",
    ]


def evaluate_three_times(receiver: Receiver, data_dir: Path, **settings: Any) -> None:
    """Start a real app context with ``settings``, evaluate its alerts (no ``for`` delays)
    three times, posting to ``receiver``, then shut it down."""
    shutdown_app()
    ctx = init_app(load_config(data_dir=data_dir, **settings), run_migrations=True)
    try:
        dispatcher = immediate(build_alert_dispatcher(ctx, receiver.url))
        for _ in range(3):
            dispatcher.evaluate()
    finally:
        shutdown_app()


def test_free_space_below_the_threshold_fires_disk_and_readiness_alerts(
    tmp_path: Path, receiver: Receiver
) -> None:
    # The tiny-threshold trick: ask for more free space than the disk has.
    evaluate_three_times(receiver, tmp_path / "data", min_free_bytes=2**49)

    names = sorted(m["alert"] for m in receiver.received)
    assert names == ["DiskSpaceCritical", "DiskSpaceLow", "ReadinessFailing"]
    assert all(m["status"] == "firing" for m in receiver.received)


def test_the_dispatcher_thread_posts_once_while_evaluating_repeatedly(
    app_ctx: AppContext, receiver: Receiver
) -> None:
    dispatcher = immediate(build_alert_dispatcher(app_ctx, receiver.url))
    downgrade(app_ctx.db, revision_chain()[-2])
    evaluated = threading.Event()
    count = [0]
    inner = dispatcher.read_state

    def counting() -> AlertState:
        count[0] += 1
        if count[0] >= 6:
            evaluated.set()
        return inner()

    dispatcher.read_state = counting
    dispatcher.start()
    try:
        assert evaluated.wait(30)
    finally:
        dispatcher.stop()

    assert len(receiver.named("ReadinessFailing")) == 1


def test_a_failing_webhook_is_retried_with_backoff(receiver: Receiver) -> None:
    receiver.fail_next = 2

    fast_sender(receiver.url).send({"alert": "X", "status": "firing"})

    assert receiver.attempts == 3
    assert receiver.received == [{"alert": "X", "status": "firing"}]


def test_an_unreachable_webhook_neither_crashes_nor_loses_the_message(
    receiver: Receiver,
) -> None:
    holds = [True]
    rule = AlertRule("Test", "warning", "s", "r", lambda _s: "on" if holds[0] else None)
    url = f"http://127.0.0.1:{free_port()}/hook"
    dispatcher = AlertDispatcher([rule], AlertState, fast_sender(url).send)

    dispatcher.evaluate()
    dispatcher.evaluate()
    assert dispatcher.pending_messages == 1  # kept, not sent twice

    dispatcher.send = fast_sender(receiver.url).send
    holds[0] = False
    dispatcher.evaluate()

    assert [m["status"] for m in receiver.received] == ["firing", "resolved"]
    assert dispatcher.pending_messages == 0
    with pytest.raises(WebhookError):
        fast_sender(url).send({"alert": "Test"})


def test_a_cache_redis_that_does_not_answer_fires_dependency_degraded_not_readiness(
    tmp_path: Path, receiver: Receiver
) -> None:
    evaluate_three_times(
        receiver,
        tmp_path / "data",
        cache_backend="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    )

    (message,) = receiver.received
    assert (message["alert"], message["status"]) == ("DependencyDegraded", "firing")
    assert "cache (CacheUnavailableError" in message["description"]
    assert message["runbook"] == "OPERATIONS.md#alert-dependencydegraded"


def test_a_broken_rule_or_state_reader_does_not_stop_the_others(receiver: Receiver) -> None:
    def broken(_state: AlertState) -> str | None:
        raise RuntimeError("bug in a rule")

    rules = [
        AlertRule("Broken", "warning", "s", "r", broken),
        AlertRule("Works", "warning", "s", "r", lambda _s: "on"),
    ]
    dispatcher = AlertDispatcher(rules, AlertState, fast_sender(receiver.url).send)
    dispatcher.evaluate()

    def no_state() -> AlertState:
        raise RuntimeError("cannot read")

    dispatcher.read_state = no_state
    dispatcher.evaluate()  # logged, not raised

    assert [m["alert"] for m in receiver.received] == ["Works"]


def test_a_condition_must_hold_for_its_duration_before_firing(receiver: Receiver) -> None:
    rule = AlertRule("Slow", "warning", "s", "r", lambda _s: "on", for_s=3600)
    dispatcher = AlertDispatcher([rule], AlertState, fast_sender(receiver.url).send)

    dispatcher.evaluate()
    dispatcher.evaluate()

    assert receiver.received == []
    assert dispatcher.firing == []


def test_the_latency_rule_reads_p95_from_the_interaction_histogram() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "stalwart_interaction_seconds",
        "x",
        ["page", "kind"],
        buckets=(0.01, 0.05, 0.1),
        registry=registry,
    )
    window = MetricWindow(registry)
    window.take(0.0)
    for _ in range(90):
        histogram.labels("home", "full").observe(0.005)
    for _ in range(10):
        histogram.labels("form", "fragment").observe(0.08)
    window.take(60.0)
    (rule,) = [r for r in default_rules() if r.name == "InteractionLatencyHigh"]

    found = window.quantile(0.95, "stalwart_interaction_seconds")
    description = rule.condition(AlertState(metrics=window))

    assert found is not None
    assert found[0] == pytest.approx(0.075)
    assert found[1] == 100
    assert description is not None
    assert "75 ms" in description
