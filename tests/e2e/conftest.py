"""End-to-end fixtures: the real server in a child process, and headless Chromium.

``live_app`` is a running ``app run`` (``python -m stalwart.cli.main run``) on a free port, once
on SQLite and once on PostgreSQL; ``live_app_factory`` starts more of them (or other launchers).
``browser``/``context``/``page`` drive Chromium through Playwright's sync API; the helpers that
wait for Streamlit are in ``tests/e2e/browser.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from tests.conftest import free_port, need
from tests.e2e.browser import BROWSER_ARGS, CHROMIUM, browser_problem, prepare_context
from tests.log_check import watch_log_file

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright
    from streamlit.testing.v1 import AppTest

# Bounds so that a hung server fails the test instead of hanging the run; not performance claims.
START_TIMEOUT_S = 60
WS_TIMEOUT_S = 30  # a bound so that a hung server fails the test; not a performance claim
STOP_TIMEOUT_S = 20

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-value-that-must-never-be-shown-0123456789"


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A child's environment: no STALWART_ settings of ours leak in, data under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALWART_")}
    settings = {
        "STALWART_DATA_DIR": str(data_dir),
        "STALWART_SECRET_KEY": SECRET,
        "STALWART_LOG_LEVEL": "DEBUG",
        # Tests of sign-in itself set STALWART_AUTH_MODE=local; the rest test other things.
        "STALWART_AUTH_MODE": "off",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({**settings, **extra})
    # So the children import this checkout even when the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def cli(*args: str) -> list[str]:
    """The ``app`` command line run by this interpreter."""
    return [sys.executable, "-m", "stalwart.cli.main", *args]


def app_run(port: int) -> list[str]:
    """``app run`` on 127.0.0.1:port."""
    return cli("run", "--host", "127.0.0.1", "--port", str(port))


# The ways to start the same app, by name: each takes a port and gives the command.
LAUNCHERS: dict[str, Callable[[int], list[str]]] = {
    "app run": app_run,
    "python app.py": lambda port: [
        sys.executable,
        str(ROOT / "app.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ],
    "streamlit run app.py": lambda port: [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        # printed before app.py is imported, so only a flag turns it off (OPERATIONS.md, Logs)
        "--logger.hideWelcomeMessage=true",
    ],
    # uvicorn binds through asyncio's create_server, whose sockets have proto IPPROTO_TCP, so
    # asyncio itself sets TCP_NODELAY there.
    "uvicorn app:app": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ],
}


@dataclass
class LiveApp:
    """A real server in a child process: start, stop, kill and restart it on the same port.

    Its output (both streams, across restarts) goes to ``workdir/server.log``.
    """

    command: list[str]
    port: int
    workdir: Path
    env: dict[str, str]
    db_url: str | None = None
    health_path: str = "/healthz"
    #: its output is Stalwart's log, checked by tests/log_check.py (not a plain Streamlit app's)
    check_logs: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.workdir / "server.log"

    @property
    def pid(self) -> int:
        """The server's process id (it is the server itself, not a wrapper)."""
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def start(self, *, wait: bool = True) -> LiveApp:
        """Start the server; with ``wait``, return once /healthz answers (else fail the test)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        if self.check_logs:
            watch_log_file(self.log_path, "server")
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_until_healthy()
        return self

    def wait_until_healthy(self) -> None:
        """Poll ``health_path`` until it answers 200; else fail the test, showing the log."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}{self.health_path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        pytest.fail(
            f"server did not answer {self.health_path} within {START_TIMEOUT_S}s:\n{self.logs()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as in a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> LiveApp:
        """Kill the server (SIGKILL) and start it again on the same port and database."""
        self.kill()
        return self.start()

    def logs(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the server wrote so far, parsed."""
        records = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records


def launch(
    command: list[str],
    port: int,
    workdir: Path,
    *,
    health_path: str = "/healthz",
    check_logs: bool = True,
    **env: str,
) -> LiveApp:
    """Start ``command`` (a server that will listen on ``port``) and wait until it is healthy.

    ``check_logs=False``: the server is not Stalwart (its output is not ours to check).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env_ = server_env(workdir / "data", **env)
    app = LiveApp(command, port, workdir, env_, health_path=health_path, check_logs=check_logs)
    return app.start()


def rerun_over_websocket(
    port: int,
    query_string: str = "",
    *,
    cookies: dict[str, str] | None = None,
    then: Callable[[list[ForwardMsg]], BackMsg | None] | None = None,
) -> list[ForwardMsg]:
    """Connect as a browser would, ask for one script run, return everything until it ends.

    ``cookies`` go with the websocket's opening request, as a browser's would. ``then`` may
    answer the first run's messages with one more BackMsg (a crafted widget trigger, say); the
    messages of that second run are returned after the first's.

    Websockets' sync client: once the browser tests ran, Playwright's event loop runs in the
    test thread, where asyncio.run() would fail.
    """
    url = f"ws://127.0.0.1:{port}/_stcore/stream"
    protocols = [Subprotocol("streamlit"), Subprotocol("x")]
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else None
    received: list[ForwardMsg] = []
    with connect(
        url, subprotocols=protocols, open_timeout=WS_TIMEOUT_S, additional_headers=headers
    ) as ws:
        back: BackMsg | None = BackMsg()
        assert back is not None
        back.rerun_script.query_string = query_string
        while back is not None:
            ws.send(back.SerializeToString())
            run = _until_finished(ws)
            received.extend(run)
            back = then(run) if then is not None else None
            then = None
        return received


def _until_finished(ws: Any) -> list[ForwardMsg]:
    received: list[ForwardMsg] = []
    deadline = time.monotonic() + WS_TIMEOUT_S
    while True:
        msg = ForwardMsg()
        msg.ParseFromString(ws.recv(timeout=max(0.0, deadline - time.monotonic())))
        received.append(msg)
        if msg.WhichOneof("type") == "script_finished":
            return received


LiveAppFactory = Callable[..., LiveApp]
#: the servers a test started, so that a failure report can show what they logged
LIVE_APPS = pytest.StashKey[list[LiveApp]]()
LOG_TAIL_LINES = 200


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the tail of each live server's log to a failed test's report."""
    report = yield
    if report.failed:
        for n, app in enumerate(item.stash.get(LIVE_APPS, [])):
            # The browser's fetches of static files say nothing about a failure and would
            # push everything else out of the tail.
            lines = [line for line in app.logs().splitlines() if not _STATIC_FETCH.search(line)]
            tail = "\n".join(lines[-LOG_TAIL_LINES:])
            report.sections.append((f"server {n} log ({app.log_path})", tail))
        journal = item.stash.get(BROWSER_JOURNAL, None)
        if journal is not None:
            report.sections.append(("browser", journal.report()))
    return report


_STATIC_FETCH = re.compile(r'"GET /(?:static/|favicon|manifest)[^"]* HTTP/[0-9.]+\\?" (?:200|304)')


@dataclass
class BrowserJournal:
    """What the test's browser saw, for a failure report: console lines, page errors, the
    websocket's life and every page's URL and visible text at the time of the failure."""

    context: BrowserContext
    events: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {what}")
        del self.events[:-LOG_TAIL_LINES]

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.note(f"console.{m.type}: {m.text[:500]}"))
        page.on("pageerror", lambda e: self.note(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.note(f"requestfailed: {r.url} {r.failure}"))
        page.on("crash", lambda _p: self.note("page crashed"))

        def on_ws(ws: Any) -> None:
            self.note(f"websocket open: {ws.url}")
            frames = {"sent": 0, "received": 0}

            def count(kind: str) -> None:
                frames[kind] += 1

            ws.on("framesent", lambda _f: count("sent"))
            ws.on("framereceived", lambda _f: count("received"))
            ws.on("socketerror", lambda e: self.note(f"websocket error: {e}"))
            ws.on(
                "close",
                lambda _w: self.note(
                    f"websocket closed after {frames['sent']} sent, "
                    f"{frames['received']} received frames"
                ),
            )

        page.on("websocket", on_ws)

    def report(self) -> str:
        out = list(self.events) or ["(no console lines, page errors or websocket events)"]
        for n, page in enumerate(self.context.pages):
            try:
                text = page.evaluate(
                    "() => document.body ? document.body.innerText.slice(0, 3000) : '(no body)'"
                )
                runs = page.evaluate("() => JSON.stringify(window.__stalwartRuns || null)")
            except Exception as exc:  # a crashed or closed page: say so, the report goes on
                text, runs = f"(could not read the page: {exc})", "?"
            out += [f"--- page {n}: {page.url}", f"run watcher: {runs}", text]
        return "\n".join(out)


BROWSER_JOURNAL = pytest.StashKey[BrowserJournal]()


@pytest.fixture
def live_app_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveAppFactory]:
    """Start ``app run`` servers: ``live_app_factory("sqlite"|"postgresql", **env)``.

    Each gets a free port, its own directory and a fresh database (a SQLite file, or a new
    PostgreSQL database from ``pg_url``); ``command=`` runs another launcher on that port
    (``command=lambda port: [...]``). Every server is stopped at teardown, before its database
    is dropped.
    """
    started: list[LiveApp] = []

    def start(
        db_kind: str = "sqlite",
        *,
        command: Callable[[int], list[str]] = app_run,
        wait: bool = True,
        **env: str,
    ) -> LiveApp:
        workdir = tmp_path_factory.mktemp(f"live-{db_kind}")
        if db_kind == "sqlite":
            db_url = f"sqlite:///{workdir / 'data' / 'stalwart.db'}"
        elif db_kind == "postgresql":
            db_url = str(request.getfixturevalue("pg_url"))
        else:
            raise ValueError(f"unknown database kind {db_kind!r}")
        port = free_port()
        # env may route the server to the database another way (through a proxy, say);
        # db_url stays the direct URL, for the test to look into the database itself.
        settings = {"STALWART_DATABASE_URL": db_url, **env}
        app = LiveApp(
            command(port), port, workdir, server_env(workdir / "data", **settings), db_url=db_url
        )
        started.append(app)
        request.node.stash.setdefault(LIVE_APPS, []).append(app)
        # Registered after pg_url was set up, so it runs before pg_url drops the database.
        request.node.addfinalizer(app.stop)
        return app.start(wait=wait)

    yield start
    for app in started:
        app.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live_app(request: pytest.FixtureRequest, live_app_factory: LiveAppFactory) -> LiveApp:
    """A running ``app run`` server with a fresh database: once SQLite, once PostgreSQL."""
    return live_app_factory(request.param)


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture
def app_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    """The page shell under Streamlit's AppTest (in process, no server), with sign-in off
    (the admin role: every page) and this test's own data directory."""
    from streamlit.testing.v1 import AppTest

    from stalwart.bootstrap import shutdown_app
    from stalwart.web.asgi import SHELL_SCRIPT

    for name in [k for k in os.environ if k.startswith("STALWART_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STALWART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STALWART_SECRET_KEY", SECRET)
    monkeypatch.setenv("STALWART_AUTH_MODE", "off")  # sign-in has tests of its own
    # The app context is per process; start from none so this test's settings are the ones used.
    shutdown_app()
    try:
        yield AppTest.from_file(SHELL_SCRIPT, default_timeout=30)
    finally:
        shutdown_app()


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    """Playwright's driver, started once per test session."""
    need("browser", browser_problem())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Headless Chromium (Debian's, at /usr/bin/chromium), one per test session."""
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies, no storage) for one test; what its pages see is
    journaled for the failure report."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    prepare_context(ctx)
    journal = BrowserJournal(ctx)
    ctx.on("page", journal.watch)
    request.node.stash[BROWSER_JOURNAL] = journal
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A tab in this test's fresh profile."""
    return context.new_page()
