"""/metrics of a real server after a scripted session: every metric is there and moved as it should.

The session talks Streamlit's websocket protocol the way a browser tab does (one connection,
several runs): it opens the home page, switches to the form page, reruns the form's fragment,
reruns the form page, and switches back. A job is run by the server's embedded engine. The
counts are compared before and after; nothing here measures time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from stalwart.core.compute.schemas import PortfolioRiskParams
from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue, JobStatus, NoDispatch
from stalwart.services.compute_jobs import portfolio_risk
from tests.e2e.conftest import WS_TIMEOUT_S, LiveApp, LiveAppFactory

#: a bound so that a job that never ends fails the test; not a performance claim
JOB_BOUND_S = 60

METRICS = (
    "stalwart_interaction_seconds",
    "stalwart_page_switch_seconds",
    "stalwart_errors",
    "stalwart_db_transaction_seconds",
    "stalwart_db_retries",
    "stalwart_db_failures",
    "stalwart_cache_hits",
    "stalwart_cache_misses",
    "stalwart_cache_evictions",
    "stalwart_jobs",
    "stalwart_jobs_oldest_queued_age_seconds",
    "stalwart_job_duration_seconds",
    "stalwart_active_sessions",
    "stalwart_build_info",
)


class Scrape:
    """One GET /metrics, parsed with Prometheus's own parser."""

    def __init__(self, app: LiveApp) -> None:
        response = httpx.get(f"{app.url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        self.families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def value(self, sample: str, **labels: str) -> float:
        """The sample's value (0 if it has not appeared yet)."""
        family = self.families[sample.removesuffix("_total").removesuffix("_count")]
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
        return 0.0


class Tab:
    """One browser tab's websocket: each ``run`` is one script run, until it finishes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def run(self, query: str, *, fragment_id: str = "") -> list[ForwardMsg]:
        back = BackMsg()
        back.rerun_script.query_string = query
        back.rerun_script.fragment_id = fragment_id
        self.ws.send(back.SerializeToString())
        received: list[ForwardMsg] = []
        deadline = time.monotonic() + WS_TIMEOUT_S
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            received.append(msg)
            if msg.WhichOneof("type") == "script_finished":
                assert msg.script_finished in (
                    ForwardMsg.FINISHED_SUCCESSFULLY,
                    ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
                ), msg
                return received


@contextmanager
def tab(app: LiveApp) -> Iterator[Tab]:
    url = f"ws://127.0.0.1:{app.port}/_stcore/stream"
    protocols = [Subprotocol("streamlit"), Subprotocol("x")]
    with connect(url, subprotocols=protocols, open_timeout=WS_TIMEOUT_S) as ws:
        yield Tab(ws)


def fragment_ids(run: list[ForwardMsg]) -> list[str]:
    return [
        m.delta.fragment_id for m in run if m.WhichOneof("type") == "delta" and m.delta.fragment_id
    ]


@pytest.fixture
def server(live_app_factory: LiveAppFactory) -> LiveApp:
    return live_app_factory("sqlite", STALWART_JOBS_POLL_INTERVAL_S="0.1")


def test_a_scripted_session_moves_every_metric(server: LiveApp) -> None:
    before = Scrape(server)
    assert set(METRICS) <= set(before.families), set(METRICS) - set(before.families)

    with tab(server) as browser:
        browser.run("")  # opens the home page
        form_page = browser.run("page=form-demo")  # a page switch
        fragments = fragment_ids(form_page)
        assert fragments, "the form page drew no fragment"
        browser.run("page=form-demo", fragment_id=fragments[0])  # a fragment rerun
        browser.run("page=form-demo")  # the same page again: not a switch
        browser.run("page=home")  # a switch back
        during = Scrape(server)

    def moved(sample: str, **labels: str) -> float:
        return during.value(sample, **labels) - before.value(sample, **labels)

    assert moved("stalwart_interaction_seconds_count", page="home", kind="full") == 2
    assert moved("stalwart_interaction_seconds_count", page="form-demo", kind="full") == 2
    assert moved("stalwart_interaction_seconds_count", page="form-demo", kind="fragment") == 1
    assert moved("stalwart_page_switch_seconds_count", page="form-demo") == 1
    assert moved("stalwart_page_switch_seconds_count", page="home") == 1
    assert moved("stalwart_db_transaction_seconds_count", outcome="committed") >= 1
    assert moved("stalwart_active_sessions") == 1  # this tab, while it is connected
    lookups = moved("stalwart_cache_hits_total", backend="memory") + moved(
        "stalwart_cache_misses_total", backend="memory"
    )
    assert lookups >= 2  # the home page reads its overview through the cache, twice
    (build,) = during.families["stalwart_build_info"].samples
    assert build.value == 1
    assert set(build.labels) == {"version", "commit"}
    assert Scrape(server).value("stalwart_active_sessions") == before.value(
        "stalwart_active_sessions"
    )  # the tab closed


def test_a_job_run_by_the_server_is_counted_and_timed(server: LiveApp) -> None:
    db = DB(server.db_url)
    try:
        params = PortfolioRiskParams(assets=1, horizon_days=1, paths=1000)
        job_id = JobQueue(db, NoDispatch()).enqueue(Job.of(portfolio_risk, params), user="e2e")
        deadline = time.monotonic() + JOB_BOUND_S
        while JobQueue(db).poll(job_id).status != JobStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
    finally:
        db.dispose()

    # The jobs gauges are read at most every couple of seconds: wait for the count to show.
    deadline = time.monotonic() + JOB_BOUND_S
    while (scrape := Scrape(server)).value("stalwart_jobs", status="succeeded") != 1:
        assert time.monotonic() < deadline, "the jobs gauge did not count the job"
        time.sleep(0.2)
    assert scrape.value("stalwart_job_duration_seconds_count", status="succeeded") == 1
    assert scrape.value("stalwart_jobs", status="queued") == 0
    assert scrape.value("stalwart_jobs", status="failed") == 0


def test_metrics_of_a_server_that_shares_a_directory(
    live_app_factory: LiveAppFactory, tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    app = live_app_factory("sqlite", STALWART_METRICS_DIR=str(shared))
    with tab(app) as browser:
        browser.run("")
        scrape = Scrape(app)
    assert scrape.value("stalwart_interaction_seconds_count", page="home", kind="full") == 1
    assert scrape.value("stalwart_active_sessions") == 1
    assert any(shared.glob("histogram_*.db"))  # the values live in the shared directory
