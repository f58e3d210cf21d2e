"""The app shell end to end: the real server started by `app run`, and every page under AppTest.

The server tests start `python -m stalwart.cli.main run` as a subprocess with its data in
tmp_path, talk to it over HTTP and over Streamlit's websocket protocol, and stop it with SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest

from stalwart.bootstrap import current_app
from stalwart.pages import DEFAULT_PAGE, PAGES
from stalwart.pages.settings import HIDDEN, display_value
from tests.conftest import ROOT, editor, free_port
from tests.e2e.conftest import (
    LAUNCHERS,
    SECRET,
    START_TIMEOUT_S,
    LiveApp,
    app_run,
    cli,
    launch,
    rerun_over_websocket,
    server_env,
)
from tests.e2e.tcp_proxy import TcpProxy

TRACE_ID_HEX = 32
DOCKERFILE = ROOT / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    port = free_port()
    srv = launch(app_run(port), port, tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        srv.stop()


# --- HTTP routes and middleware -----------------------------------------------------------


def test_healthz_reports_ok_and_version(server: LiveApp) -> None:
    response = httpx.get(f"{server.url}/healthz", timeout=10)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str)
    assert body["version"]


def test_readyz_checks_the_database(server: LiveApp) -> None:
    response = httpx.get(f"{server.url}/readyz", timeout=10)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    database = body["checks"]["database"]
    assert database["status"] == "ok"
    assert isinstance(database["latency_ms"], float | int)
    assert database["latency_ms"] >= 0


def readyz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=30)


def wait_for_readyz(url: str, status_code: int, within_s: float = 30) -> httpx.Response:
    """Poll /readyz until it answers ``status_code`` (a pooled connection may need a retry)."""
    deadline = time.monotonic() + within_s
    while True:
        response = readyz(url)
        if response.status_code == status_code or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.mark.postgres
def test_readyz_turns_503_while_postgresql_is_unreachable_and_200_when_it_returns(
    tmp_path: Path, pg_url: str
) -> None:
    # The app reaches PostgreSQL through a proxy the test cuts: to the app, the server is gone
    # (refused connects, reset connections); liveness and readiness must then disagree.
    target = make_url(pg_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    via_proxy = target.set(host="127.0.0.1", port=proxy.port)
    port = free_port()
    srv = launch(
        cli("run", "--port", str(port)),
        port,
        tmp_path,
        STALWART_DATABASE_URL=via_proxy.render_as_string(hide_password=False),
        STALWART_DB_CONNECT_TIMEOUT_S="1",
    )
    try:
        before = readyz(srv.url)
        proxy.cut()
        during = wait_for_readyz(srv.url, 503)
        alive = httpx.get(f"{srv.url}/healthz", timeout=10)
        proxy.restore()
        after = wait_for_readyz(srv.url, 200)
        logs = srv.logs()
    finally:
        srv.stop()
        proxy.cut()

    assert before.status_code == 200, before.text
    assert before.json()["checks"]["migrations"]["status"] == "ok"
    assert during.status_code == 503, during.text
    assert alive.status_code == 200
    body = during.json()
    assert body["status"] == "unavailable"
    database = body["checks"]["database"]
    assert database["status"] == "error"
    assert database["latency_ms"] >= 0
    assert database["error"] == "DatabaseUnavailableError"
    assert database["error_id"] in logs
    assert body["checks"]["filesystem"]["status"] == "ok"  # only what broke is reported broken
    assert str(proxy.port) not in during.text
    assert "127.0.0.1" not in during.text
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "ok"


def test_readyz_answers_503_while_the_database_is_unreachable(tmp_path: Path) -> None:
    # A PostgreSQL URL on a port nobody listens on; without migrations at start the server
    # comes up, so liveness and readiness must disagree.
    port = free_port()
    url = f"postgresql://app:pg-password-not-to-leak@127.0.0.1:{free_port()}/stalwart"
    srv = launch(
        cli("run", "--port", str(port)),
        port,
        tmp_path,
        STALWART_DATABASE_URL=url,
        STALWART_MIGRATE_ON_START="false",
    )
    try:
        response = readyz(srv.url)
    finally:
        srv.stop()

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    database = body["checks"]["database"]
    assert database["status"] == "error"
    assert database["latency_ms"] >= 0
    assert database["error"] == "DatabaseUnavailableError"
    assert database["error_id"] in srv.logs()
    assert "pg-password-not-to-leak" not in response.text
    assert "127.0.0.1" not in response.text


def test_the_docker_healthcheck_runs_app_health_against_the_server(server: LiveApp) -> None:
    # The HEALTHCHECK line of docker/Dockerfile, run as written, but with this server's port
    # and this checkout's interpreter for `app`.
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("HEALTHCHECK")]
    command = json.loads(line.split(" CMD ", 1)[1])
    assert command[:2] == ["app", "health"]
    args = [a.replace(":8501", f":{server.port}") for a in command[2:]]

    ready = subprocess.run(
        [*cli("health"), *args], capture_output=True, text=True, timeout=60, env=server.env
    )
    gone = subprocess.run(
        [*cli("health"), *[a.replace(f":{server.port}", f":{free_port()}") for a in args]],
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env,
    )

    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ready: yes" in ready.stdout
    assert "database" in ready.stdout
    assert gone.returncode == 1


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/", "/_stcore/health"])
def test_every_http_response_carries_a_fresh_trace_id(server: LiveApp, path: str) -> None:
    first = httpx.get(f"{server.url}{path}", timeout=10).headers["x-trace-id"]
    second = httpx.get(f"{server.url}{path}", timeout=10).headers["x-trace-id"]

    assert len(first) == TRACE_ID_HEX
    int(first, 16)
    assert first != second


def test_a_well_formed_incoming_trace_id_is_kept_and_a_forged_one_replaced(
    server: LiveApp,
) -> None:
    given = "0123456789abcdef0123456789abcdef"
    kept = httpx.get(f"{server.url}/healthz", headers={"X-Trace-Id": given}, timeout=10)
    forged = httpx.get(f"{server.url}/healthz", headers={"X-Trace-Id": "evil\tvalue"}, timeout=10)

    assert kept.headers["x-trace-id"] == given
    assert forged.headers["x-trace-id"] != "evil\tvalue"
    assert len(forged.headers["x-trace-id"]) == TRACE_ID_HEX


# --- /metrics ----------------------------------------------------------------------------


def scrape(url: str, **headers: str) -> dict[str, float]:
    """``/metrics`` parsed with Prometheus's own text parser: sample name -> value."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_the_cache_reads_of_a_session(server: LiveApp) -> None:
    before = scrape(server.url)
    for _ in range(2):  # the home page reads the projects overview through the cache
        assert_ran_cleanly(rerun_over_websocket(server.port))
    after = scrape(server.url)

    assert after["stalwart_cache_hits_total"] >= before["stalwart_cache_hits_total"] + 1
    lookups = ("stalwart_cache_hits_total", "stalwart_cache_misses_total")
    assert sum(after[n] for n in lookups) == sum(before[n] for n in lookups) + 2
    assert after["stalwart_cache_entries"] >= 1
    assert after["process_resident_memory_bytes"] > 0


def test_metrics_ask_for_the_token_when_one_is_set(tmp_path: Path) -> None:
    port, token = free_port(), "metrics-token-" + "x" * 16
    srv = launch(app_run(port), port, tmp_path, STALWART_METRICS_TOKEN=token)
    try:
        missing = httpx.get(f"{srv.url}/metrics", timeout=10)
        wrong = httpx.get(f"{srv.url}/metrics", headers={"Authorization": "Bearer no"}, timeout=10)
        metrics = scrape(srv.url, Authorization=f"Bearer {token}")
    finally:
        srv.stop()

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert token not in missing.text + wrong.text
    assert "stalwart_cache_hits_total" in metrics


def machine_address() -> str | None:
    """An address of this machine other than loopback (what a remote scraper would come from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


def test_metrics_without_a_token_answer_this_machine_only(tmp_path: Path) -> None:
    address = machine_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback to come from")
    port = free_port()
    command = cli("run", "--host", "0.0.0.0", "--port", str(port))
    srv = launch(command, port, tmp_path)
    try:
        remote = httpx.get(f"http://{address}:{port}/metrics", timeout=10)
        local = scrape(srv.url)
    finally:
        srv.stop()

    assert remote.status_code == 403
    assert "STALWART_METRICS_TOKEN" in remote.json()["error"]
    assert "stalwart_cache_hits_total" in local


# --- the page shell over Streamlit's websocket protocol -----------------------------------


def rendered_elements(messages: list[ForwardMsg]) -> list[str]:
    return [
        str(msg.delta.new_element)
        for msg in messages
        if msg.WhichOneof("type") == "delta" and msg.delta.WhichOneof("type") == "new_element"
    ]


def assert_ran_cleanly(messages: list[ForwardMsg]) -> None:
    finished = messages[-1]
    assert finished.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY
    exceptions = [
        msg.delta.new_element.exception
        for msg in messages
        if msg.WhichOneof("type") == "delta"
        and msg.delta.new_element.WhichOneof("type") == "exception"
    ]
    assert exceptions == []


def test_home_page_renders_over_the_websocket(server: LiveApp) -> None:
    messages = rerun_over_websocket(server.port)

    assert_ran_cleanly(messages)
    elements = "\n".join(rendered_elements(messages))
    assert "Welcome to Stalwart" in elements
    unescaped = elements.replace('\\"', '"')  # the nav's links are JSON inside the proto
    for page in PAGES.values():
        assert f'"label": "{page.title}"' in unescaped  # every page is in the navigation


def test_settings_page_renders_over_the_websocket_without_secrets(server: LiveApp) -> None:
    messages = rerun_over_websocket(server.port, "page=settings")

    assert_ran_cleanly(messages)
    everything = "\n".join(str(msg) for msg in messages)
    assert 'body: "Settings"' in everything
    assert SECRET not in everything


def test_each_rerun_logs_under_its_own_trace_id(server: LiveApp) -> None:
    for _ in range(2):
        assert_ran_cleanly(rerun_over_websocket(server.port, "page=job-demo"))

    rendered = [
        record
        for record in server.log_records()
        if record.get("event") == "page rendered" and record.get("page") == "job-demo"
    ]
    trace_ids = [record["trace_id"] for record in rendered]
    assert len(trace_ids) >= 2
    assert all(isinstance(tid, str) and len(tid) == TRACE_ID_HEX for tid in trace_ids)
    assert len(set(trace_ids)) == len(trace_ids)


# --- the `app run` command's checks -------------------------------------------------------


def test_run_refuses_a_port_in_use_with_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run(
            cli("run", "--host", "127.0.0.1", "--port", str(port)),
            cwd=tmp_path,
            env=server_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} is in use; pass --port or set STALWART_PORT" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching the database


def test_run_reports_an_invalid_setting_with_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        cli("run"),
        cwd=tmp_path,
        env=server_env(tmp_path / "data", STALWART_PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "STALWART_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    port = free_port()
    srv = launch(cli("run", "--port", str(port)), port, tmp_path)
    returncode = srv.stop()

    events = [record.get("event") for record in srv.log_records()]
    # uvicorn re-raises the signal it caught once shutdown is done, so -SIGTERM is a clean stop.
    assert returncode in {0, -signal.SIGTERM}, srv.logs()
    assert "app started" in events
    assert "app stopped" in events


@pytest.mark.parametrize("launcher", ["streamlit run app.py", "uvicorn app:app"])
def test_app_py_serves_the_same_app_under_other_launchers(tmp_path: Path, launcher: str) -> None:
    port = free_port()
    command = LAUNCHERS[launcher](port)
    srv = launch(command, port, tmp_path)
    try:
        readyz = httpx.get(f"{srv.url}/readyz", timeout=10)
        messages = rerun_over_websocket(port)
    finally:
        srv.stop()

    assert readyz.status_code == 200
    assert "x-trace-id" in readyz.headers
    assert_ran_cleanly(messages)
    assert "Welcome to Stalwart" in "\n".join(rendered_elements(messages))


# --- every page under AppTest (in-process, no server) --------------------------------------


def page_title(at: AppTest) -> str:
    return str(at.title[0].value)


def test_shell_opens_on_the_home_page(app_test: AppTest) -> None:
    at = app_test.run()

    assert not at.exception
    assert page_title(at) == "Welcome to Stalwart"
    assert [link["label"] for link in nav_data(at)["links"]] == [p.title for p in PAGES.values()]
    assert current_link(at) == DEFAULT_PAGE


# Pages whose heading is not their navigation title.
HEADINGS = {DEFAULT_PAGE: "Welcome to Stalwart", "form-demo": "Project brief 1"}


@pytest.mark.parametrize("slug", list(PAGES))
def test_every_page_renders_from_its_query_parameter(app_test: AppTest, slug: str) -> None:
    app_test.query_params["page"] = slug
    at = app_test.run()

    assert not at.exception
    assert not at.error
    assert page_title(at) == HEADINGS.get(slug, PAGES[slug].title)
    assert current_link(at) == slug


def nav_data(at: AppTest) -> dict[str, Any]:
    """What the sidebar's navigation component was given: its links."""
    (nav,) = [e for e in at.sidebar.get("bidi_component") if e.proto.component_name.endswith("nav")]
    return dict(json.loads(nav.proto.json))


def current_link(at: AppTest) -> str:
    (current,) = [link["id"] for link in nav_data(at)["links"] if link["current"]]
    return str(current)


def test_navigation_links_go_to_every_page_by_url(app_test: AppTest) -> None:
    at = app_test.run()
    links = nav_data(at)["links"]

    assert [link["id"] for link in links] == list(PAGES)
    for link in links:
        assert link["href"] == f"?page={link['id']}"
        # Following a link is the browser changing the URL and rerunning with it.
        at.query_params["page"] = link["id"]
        at.run()
        assert not at.exception
        assert page_title(at) == HEADINGS.get(link["id"], PAGES[link["id"]].title)
        assert current_link(at) == link["id"]


def test_an_unknown_page_falls_back_to_home_with_a_warning(app_test: AppTest) -> None:
    app_test.query_params["page"] = "[click here](https://example.invalid)"
    at = app_test.run()

    assert not at.exception
    # A toast, not a warning above the content: nothing moves under the user.
    assert str(at.toast[0].value) == "There is no such page; here is the home page."
    assert page_title(at) == "Welcome to Stalwart"
    assert at.query_params["page"] == DEFAULT_PAGE


def test_settings_page_lists_settings_and_hides_the_secret(app_test: AppTest) -> None:
    app_test.query_params["page"] = "settings"
    at = app_test.run()

    table = at.dataframe[0].value
    values = dict(zip(table["variable"], table["value"], strict=True))
    assert values["STALWART_SECRET_KEY"] == HIDDEN
    assert values["STALWART_PORT"] == "8501"
    assert SECRET not in table.to_string()


def test_coming_soon_pages_offer_no_controls(app_test: AppTest) -> None:
    for slug in ("import-export",):
        app_test.query_params["page"] = slug
        at = app_test.run()

        assert "Coming in a later release." in str(at.info[0].value)
        assert len(at.main.button) == 0
        assert len(at.text_input) == 0


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("secret_key", "plain-string-secret", HIDDEN),
        ("redis_password", "pw", HIDDEN),
        ("api_token", "tok", HIDDEN),
        (
            "database_url",
            "postgresql://app:s3cret@db:5432/stalwart",
            "postgresql://app:***@db:5432/stalwart",
        ),
        ("redis_url", "redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("database_url", "sqlite:///data/stalwart.db", "sqlite:///data/stalwart.db"),
        ("port", 8501, "8501"),
    ],
)
def test_settings_values_never_show_credentials(name: str, value: object, shown: str) -> None:
    assert display_value(name, value) == shown


def _navigating_script() -> None:
    """A page that moves elsewhere from a callback with ``Router.navigate`` (AppTest script)."""
    import streamlit as st
    from pydantic import BaseModel

    from stalwart.bootstrap import current_app
    from stalwart.core.router import Router, RouteSpec
    from stalwart.core.session import bootstrap_session

    class Brief(BaseModel):
        brief: int = 1

    ctx = current_app()
    routes = {"home": RouteSpec("home"), "brief": RouteSpec("brief", Brief)}
    router = Router(ctx.db, bootstrap_session(ctx.db), routes)
    route = router.resolve()
    st.title(f"{route.page} {route.params}")
    st.button("Open brief 7", on_click=router.navigate, args=("brief",), kwargs={"brief": 7})
    if st.button("Nowhere"):
        try:
            router.navigate("nowhere")
        except ValueError as err:
            st.error(str(err))


def test_router_navigate_goes_to_a_page_with_params_and_remembers_it(
    app_test: AppTest,
) -> None:
    from stalwart.models import SessionRecord

    at = AppTest.from_function(_navigating_script, default_timeout=30).run()
    assert page_title(at) == "home {}"

    at.button[0].click().run()
    assert page_title(at) == "brief {'brief': '7'}"
    assert at.query_params["page"] == ["brief"] or at.query_params["page"] == "brief"
    assert current_app().db.flush_behind()  # the place is written behind the interaction
    with current_app().db.unit_of_work(read_only=True) as uow:
        places = {
            (r.page, tuple(sorted(r.params.items()))) for r in uow.session.query(SessionRecord)
        }
    assert ("brief", (("brief", "7"),)) in places

    at.button[1].click().run()
    assert "unknown page 'nowhere'" in at.error[0].value


def test_save_over_a_newer_version_shows_both_even_in_a_full_run(app_test: AppTest) -> None:
    """Save's conflict check holds when the click arrives in a full-app run (AppTest runs
    every interaction as one), not only in the toolbar's own fragment run."""
    from stalwart.models import FormVersion, SessionRecord
    from stalwart.pages.form_demo import DEFAULTS
    from stalwart.services.form_service import FormService

    app_test.query_params["page"] = "form-demo"
    at = app_test.run()  # this tab's draft is pinned to "no version yet"
    assert not at.exception
    at.text_input(key="sw__project-brief-1__name").set_value("My name").run()  # valid draft

    db = current_app().db
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id="someone-else", page="home", params={})))
    forms = FormService(db)
    forms.persist_input("someone-else", "project_brief:1", DEFAULTS, "name", "Their name")
    forms.save(
        "someone-else", "project_brief:1", DEFAULTS, actor=editor("other"), idempotency_key="k1"
    )
    at.run()  # this tab learns of version 1 (any interaction would do)

    at.button(key="swc__project-brief-1__save").click().run()

    assert not at.exception
    # AppTest does not draw dialogs: ask the form what Save decided.
    assert any("conflict" in str(m.value) for m in at.markdown)  # the state line says so
    form = at.session_state["_stalwart_forms"]["project-brief-1"]
    assert form.show_conflict  # the dialog with both versions is what Save opens
    assert form.save_key is None
    with db.unit_of_work(read_only=True) as uow:
        versions = uow.session.query(FormVersion).filter_by(form_id="project_brief:1").count()
    assert versions == 1  # nothing was saved over theirs


def test_the_users_page_adds_a_user_and_refuses_a_bad_one(app_test: AppTest) -> None:
    app_test.query_params["page"] = "users"
    at = app_test.run()
    at.text_input(key="users-new-name").input("nadia")
    at.text_input(key="users-new-password").input("a long enough password")
    at.selectbox(key="users-new-role").select("editor")
    at.button(key="FormSubmitter:users-new-Add user").click()
    at = at.run()
    assert [s.value for s in at.success] == ["Added nadia (editor)."]
    assert "nadia" in list(at.dataframe[0].value["username"])

    at.text_input(key="users-new-name").input("nadia")
    at.text_input(key="users-new-password").input("another long password")
    at.button(key="FormSubmitter:users-new-Add user").click()
    at = at.run()
    assert "exists already" in at.error[0].value
