"""``docker/nginx.conf`` in front of two real ``app run`` replicas, over TLS.

HTTP is redirected; HTTPS carries the app's headers and HSTS exactly once; the trace id is
nginx's ``$request_id`` end to end; one identity cookie always reaches the same replica; the
websocket works through ``wss://`` with a browser's Origin; /metrics is refused outside the
allowed networks; an upload body over the limit is refused by nginx; and Chromium loads the app
through it under the CSP. Skipped where nginx is not installed (see ``tests/nginx_harness.py``).
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from stalwart.core.session import COOKIE_NAME, new_token
from stalwart.web.security_headers import HSTS
from tests.conftest import free_port, need
from tests.e2e.browser import wait_for_app_idle
from tests.e2e.conftest import WS_TIMEOUT_S, LiveApp, app_run, launch
from tests.e2e.test_security_headers import HEADERS, VIOLATION_LISTENER_JS
from tests.nginx_harness import Nginx, nginx_problem

if TYPE_CHECKING:
    from playwright.sync_api import Browser

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveApp]]:
    need("nginx", nginx_problem())
    started: list[LiveApp] = []
    try:
        for name in ("replica-a", "replica-b"):
            port = free_port()
            started.append(
                launch(
                    app_run(port),
                    port,
                    tmp_path_factory.mktemp(name),
                    STALWART_TRUSTED_PROXIES="127.0.0.1/32",
                    STALWART_AUTH_MODE="off",
                )
            )
        yield started
    finally:
        for app in started:
            app.stop()


@pytest.fixture(scope="module")
def proxy(replicas: list[LiveApp], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    nginx = Nginx(
        tmp_path_factory.mktemp("nginx"),
        [f"127.0.0.1:{app.port}" for app in replicas],
        free_port(),
        free_port(),
    )
    nginx.write()
    try:
        yield nginx.start()
    finally:
        nginx.stop()


def https(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=False, timeout=15, **kwargs)


def upstream_of(proxy: Nginx, trace_id: str) -> str:
    """The replica nginx sent the request with this trace id to (from its access log)."""
    deadline = time.monotonic() + 5  # nginx writes the line after the response
    while time.monotonic() < deadline:
        for line in proxy.access_log():
            if f"trace={trace_id} " in line:
                return line.rsplit("upstream=", 1)[1].strip()
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {trace_id}:\n{proxy.logs()[-2000:]}")


def test_plain_http_is_redirected_to_https(proxy: Nginx) -> None:
    response = httpx.get(proxy.http_url + "/?page=jobs", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/?page=jobs"


def test_https_carries_the_app_headers_and_hsts_once(proxy: Nginx) -> None:
    with https() as client:
        for path in ("/", "/_stcore/health", "/healthz", "/static/js/no-such-file.js"):
            response = client.get(proxy.https_url + path)
            assert HEADERS.issubset(response.headers), path
            assert response.headers.get_list("strict-transport-security") == [HSTS], path
            assert response.headers.get_list("content-security-policy") == [
                response.headers["content-security-policy"]
            ]
    with https() as client:
        # The identity cookie is Secure behind TLS (the app believes the proxy's https).
        page = client.get(proxy.https_url + "/")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=")
        assert "Secure" in cookie


def test_the_trace_id_is_nginxs_request_id(proxy: Nginx) -> None:
    with https() as client:
        response = client.get(proxy.https_url + "/healthz")
        trace_id = response.headers["x-trace-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
        upstream_of(proxy, trace_id)  # the same id is in nginx's access log

        # A client's own id is replaced at the edge.
        forged = "ab" * 16
        assert (
            client.get(proxy.https_url + "/healthz", headers={"X-Trace-Id": forged}).headers[
                "x-trace-id"
            ]
            != forged
        )


def test_one_identity_cookie_sticks_to_one_replica(proxy: Nginx, replicas: list[LiveApp]) -> None:
    seen: dict[str, set[str]] = {}
    with https() as client:
        for _ in range(24):
            token = new_token()
            for _ in range(3):
                response = client.get(
                    proxy.https_url + "/healthz", headers={"Cookie": f"{COOKIE_NAME}={token}"}
                )
                seen.setdefault(token, set()).add(
                    upstream_of(proxy, response.headers["x-trace-id"])
                )
        # Without the cookie, the client's address is the key: one replica as well.
        anonymous = {
            upstream_of(proxy, client.get(proxy.https_url + "/healthz").headers["x-trace-id"])
            for _ in range(5)
        }
    assert all(len(upstreams) == 1 for upstreams in seen.values()), seen
    used = set().union(*seen.values())
    assert used == {f"127.0.0.1:{app.port}" for app in replicas}  # and both are used
    assert len(anonymous) == 1


def test_the_websocket_works_through_wss_with_a_browser_origin(proxy: Nginx) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"wss://127.0.0.1:{proxy.https_port}/_stcore/stream"
    with connect(
        url,
        ssl=context,
        subprotocols=[Subprotocol("streamlit"), Subprotocol("x")],
        origin=Origin(proxy.https_url),  # what a browser sends; Streamlit compares it with Host
        open_timeout=WS_TIMEOUT_S,
    ) as ws:
        back = BackMsg()
        back.rerun_script.query_string = ""
        ws.send(back.SerializeToString())
        deadline = time.monotonic() + WS_TIMEOUT_S
        kinds = []
        while "script_finished" not in kinds:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            kinds.append(msg.WhichOneof("type"))
    assert "new_session" in kinds


def test_metrics_only_from_allowed_addresses(proxy: Nginx) -> None:
    with https() as client:
        assert client.get(proxy.https_url + "/metrics").status_code == 200
    # 127.0.0.2 is this machine too, but not in the allow list.
    elsewhere = httpx.HTTPTransport(verify=False, local_address="127.0.0.2")
    with https(transport=elsewhere) as client:
        assert client.get(proxy.https_url + "/metrics").status_code == 403


def test_upload_bodies_are_bounded_by_nginx(proxy: Nginx) -> None:
    upload = proxy.https_url + "/_stcore/upload_file/no-such-session/file-1"
    with https() as client:
        # A 10 MiB file (the app's default limit) gets through nginx to the app, which refuses
        # it for the missing XSRF token: nginx did not stand in the way.
        within = client.put(upload, files={"file": ("a.bin", b"x" * (10 * MIB))})
        assert within.status_code == 403
        assert "XSRF" in within.text
        # 12 MiB: refused by nginx before the app sees a byte.
        over = client.put(upload, files={"file": ("b.bin", b"x" * (12 * MIB))})
        assert over.status_code == 413
        assert "nginx" in over.text


@pytest.mark.browser
def test_chromium_runs_the_app_through_nginx_under_the_csp(proxy: Nginx, browser: Browser) -> None:
    from playwright.sync_api import expect

    from tests.e2e.browser import prepare_context

    context = browser.new_context(ignore_https_errors=True)
    try:
        prepare_context(context)
        context.add_init_script(VIOLATION_LISTENER_JS)
        page = context.new_page()
        response = page.goto(proxy.https_url + "/?page=form-demo")
        assert response is not None
        assert response.headers["strict-transport-security"] == HSTS
        wait_for_app_idle(page)  # the websocket runs over wss:// through nginx
        expect(page.locator('[data-testid="stMain"] h1').first).to_contain_text("Project brief")
        page.wait_for_selector(".st-key-nav a")
        assert page.evaluate("() => window.__cspViolations") == []
    finally:
        context.close()
