"""Latency of plain Streamlit (as shipped, and with Stalwart's tuning) against Stalwart.

    uv run python bench/run_bench.py            # everything, about three minutes
    uv run python bench/run_bench.py --quick    # fewer iterations, for a smoke run

Starts each server on a free 127.0.0.1 port, measures, stops it, and in the same run:

- **server round trip** (``bench/ws_driver.py``): a websocket client sends ``rerun_script``
  with a selectbox change, or a page switch, and times until ``script_finished``;
- **in headless Chromium**: a page switch from the click's ``pointerdown`` until the new
  page's heading is in the DOM (a MutationObserver in the page, timed with the page's own
  clock), and a select change from the ``pointerdown`` on the option until the run it caused
  has finished and the next frame is produced ("settled").

Prints a markdown table and writes ``bench/results/latest.json``. Every measurement is a fixed
number of iterations with a time budget; nothing talks to anything but 127.0.0.1.

Adding a browser scenario is one function ``(tab) -> milliseconds`` decorated with
``@browser_scenario("name")``; it may keep what it learns in ``tab.state`` and raise
``ScenarioUnavailable`` when the app lacks what it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# bench/ is sys.path[0] when this runs as a script; the repository root was added above.
import ws_driver  # noqa: E402
from tests.e2e.browser import (  # noqa: E402
    BROWSER_ARGS,
    CHROMIUM,
    RUN_WATCHER_JS,
    app_run_count,
    wait_for_app_idle,
)
from ws_driver import ScenarioUnavailable, summarise  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
except ImportError:  # the browser part is skipped without playwright
    PlaywrightTimeoutError = TimeoutError  # type: ignore[misc,assignment]

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
STEP_TIMEOUT_MS = 20_000  # one click's wait in the browser
MAIN_HEADING = '[data-testid="stMain"] h1'


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STREAMLIT_FLAGS = [
    "--server.address=127.0.0.1",
    "--server.headless=true",
    "--browser.gatherUsageStats=false",
    "--server.fileWatcherType=none",  # as `app run` does: a served app is not edited in place
]


@dataclass(frozen=True)
class AppProfile:
    """Where the things a scenario needs are in one app."""

    kind: str  # "plain" or "stalwart"
    nav: tuple[str, str]  # selectors of two navigation controls: first page, other page
    form_query: str  # the query string of the page with the form (its selectbox)
    ws_page_switch: Callable[[], ws_driver.Scenario]


PLAIN = AppProfile(
    kind="plain",
    nav=(
        '[data-testid="stSidebarNavLink"]:has-text("Form")',
        '[data-testid="stSidebarNavLink"]:has-text("Data")',
    ),
    form_query="",
    ws_page_switch=ws_driver.page_switch_navigation,
)
STALWART = AppProfile(
    kind="stalwart",
    nav=('.st-key-nav a[data-target="home"]', '.st-key-nav a[data-target="settings"]'),
    form_query="page=form-demo&brief=1",
    ws_page_switch=lambda: ws_driver.page_switch_query("page=home", "page=settings"),
)


# Sign-in for every Stalwart server the benchmarks start, as it ships (STALWART_AUTH_MODE=local):
# each simulated user / browser context signs in over HTTP first, and the measured runs are the
# app's pages, not the "Sign in" prompt. One account, created through /auth/setup at start.
BENCH_USER = "bench-admin"
BENCH_PASSWORD = "bench-password-0123456789"  # >= 12 characters; a throwaway data directory
AUTH_MODES = ("local", "off")
# argon2 as cheap as the config allows: what is measured is using the app while signed in, not
# the sign-in itself, and N users signing in must not stretch a level's connect phase. Hashing
# cost does not touch an interaction: a run checks the login session by an indexed read.
FAST_PASSWORD_HASH = {
    "STALWART_PASSWORD_HASH_MEMORY_KIB": "8192",
    "STALWART_PASSWORD_HASH_PARALLELISM": "1",
    "STALWART_PASSWORD_HASH_TIME_COST": "1",
}


@dataclass
class Server:
    """One server under test, started in a child process with its own directory.

    A Stalwart server runs with sign-in (``auth="local"``; ``"off"``: STALWART_AUTH_MODE=off,
    every browser an anonymous user): at start the bench account is created, and
    ``credentials`` is what each simulated user signs in with (None without sign-in).
    """

    name: str
    description: str
    profile: AppProfile
    command: Callable[[int], list[str]]
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    browser: bool = True  # also measured in Chromium (the ws-only rows are GC variants)
    auth: str = "local"  # Stalwart only: STALWART_AUTH_MODE
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://127.0.0.1:{self.port}"

    def start(self, workdir: Path) -> None:
        """Start on a free port; return once the health URL answers."""
        self.port, self.workdir = free_port(), workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STALWART_", "STREAMLIT_"))}
        env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
        env.update(STALWART_DATA_DIR=str(workdir / "data"), STALWART_LOG_LEVEL="WARNING")
        if self.stalwart:
            env.update(STALWART_AUTH_MODE=self.auth, **FAST_PASSWORD_HASH)
        env.update(self.env)
        with (workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(self.port),
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + self.health_path, timeout=2).status_code == 200:
                    self.set_up_account()
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT_S}s: {self.log_tail()}")

    @property
    def stalwart(self) -> bool:
        """Whether this is a Stalwart server (plain Streamlit has no sign-in)."""
        return self.profile.kind == "stalwart"

    @property
    def signs_in(self) -> bool:
        """Whether its users must sign in (Stalwart with STALWART_AUTH_MODE=local)."""
        return self.stalwart and self.env.get("STALWART_AUTH_MODE", self.auth) == "local"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(username, password) each simulated user signs in with, or None."""
        return (BENCH_USER, BENCH_PASSWORD) if self.signs_in else None

    def set_up_account(self) -> None:
        """With sign-in: create the bench account (the first administrator, /auth/setup)."""
        if self.signs_in:
            _in_thread(ws_driver.sign_in(self.url, BENCH_USER, BENCH_PASSWORD, setup=True))

    def login_cookies(self) -> dict[str, str]:
        """A fresh sign-in's cookies (empty without sign-in), for a browser context."""
        if not self.signs_in:
            return {}
        cookies: dict[str, str] = _in_thread(
            ws_driver.sign_in(self.url, BENCH_USER, BENCH_PASSWORD)
        )
        return cookies

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output, for an error message."""
        assert self.workdir is not None
        text = (self.workdir / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _in_thread(coro: Any) -> Any:
    """``asyncio.run(coro)`` in a thread of its own: callable where an event loop runs (the
    load benchmark's, Playwright's sync API's)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def with_auth(servers: list[Server], mode: str) -> list[Server]:
    """``--auth``: ``local`` (as shipped, the default) keeps each Stalwart server's own mode
    (so the ``stalwart-auth-off`` comparison row stays off); ``off`` runs every Stalwart server
    without sign-in (and drops the comparison row, the same server twice)."""
    if mode == "local":
        return servers
    if mode != "off":
        raise ValueError(f"--auth must be one of {AUTH_MODES}, not {mode!r}")
    out = []
    for server in servers:
        if server.name == "stalwart-auth-off":
            continue
        if server.stalwart:
            server.auth = "off"
        out.append(server)
    return out


def plain(*launcher: str) -> Callable[[int], list[str]]:
    """``<launcher> run bench/plain_app.py`` on a port."""
    return lambda port: [
        *launcher,
        "run",
        str(BENCH / "plain_app.py"),
        *STREAMLIT_FLAGS,
        f"--server.port={port}",
    ]


def app_run(port: int) -> list[str]:
    """``app run`` on 127.0.0.1:port, as the README starts Stalwart."""
    return [
        sys.executable,
        "-m",
        "stalwart.cli.main",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


TUNED = [sys.executable, str(BENCH / "tuned_streamlit.py")]
SERVERS: list[Server] = [
    Server(
        "plain-shipped",
        "plain Streamlit as shipped",
        PLAIN,
        plain(sys.executable, "-m", "streamlit"),
        "/_stcore/health",
    ),
    Server(
        "plain-nodelay",
        "plain + TCP_NODELAY (GC as shipped)",
        PLAIN,
        plain(*TUNED, "--gc", "shipped"),
        "/_stcore/health",
        browser=False,
    ),
    Server(
        "plain-timer",
        "plain + TCP_NODELAY + postScriptGC=false, gc.collect() every 10 s",
        PLAIN,
        plain(*TUNED, "--gc", "timer", "--gc-interval", "10"),
        "/_stcore/health",
        browser=False,
    ),
    Server(
        "plain-freeze",
        "plain + TCP_NODELAY + gc.freeze(), postScriptGC kept",
        PLAIN,
        plain(*TUNED, "--gc", "freeze"),
        "/_stcore/health",
        browser=False,
    ),
    Server(
        "plain-tuned",
        "plain + TCP_NODELAY + gc.freeze() + postScriptGC=false (Stalwart's tuning)",
        PLAIN,
        plain(*TUNED, "--gc", "freeze-auto"),
        "/_stcore/health",
    ),
    Server(
        "stalwart",
        "Stalwart (`app run`)",
        STALWART,
        app_run,
        "/healthz",
    ),
    Server(
        "stalwart-auth-off",
        "Stalwart without sign-in (STALWART_AUTH_MODE=off)",
        STALWART,
        app_run,
        "/healthz",
        browser=False,
        auth="off",
    ),
    Server(
        "stalwart-gc-every-run",
        "Stalwart with Streamlit's full collection after every run",
        STALWART,
        app_run,
        "/healthz",
        env={"STALWART_GC_AFTER_EVERY_RUN": "true"},
        browser=False,
    ),
]


# --- server round trip over the websocket --------------------------------------------------


def measure_ws(server: Server, iterations: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """Round trip of a select change (on the form page), of a page switch, and of the rerun
    a keystroke causes (Stalwart's journal sending its outbox; plain Streamlit sends none)."""
    scenarios: dict[str, tuple[Callable[[], ws_driver.Scenario], str]] = {
        "select": (ws_driver.select_change, server.profile.form_query),
        "page switch": (server.profile.ws_page_switch, ""),
        "keystroke": (ws_driver.keystroke, server.profile.form_query),
    }
    results: dict[str, Any] = {}
    for name, (make, query) in scenarios.items():
        try:
            measurement = ws_driver.measure(
                server.url,
                make,
                iterations=iterations,
                warmup=warmup,
                query_string=query,
                budget_s=budget_s,
                credentials=server.credentials,
            )
            # In a thread of its own: Playwright's sync API owns this thread's event loop.
            with ThreadPoolExecutor(max_workers=1) as pool:
                samples = pool.submit(asyncio.run, measurement).result()
            results[name] = summarise(samples).as_dict()
        except ScenarioUnavailable as err:
            results[name] = {"unavailable": str(err)}
        except Exception as err:
            results[name] = {"error": f"{type(err).__name__}: {err}"}
    return results


# --- in the browser ------------------------------------------------------------------------

# Timing inside the page, on the page's clock: pointerdown's timestamp to the moment a
# MutationObserver sees the wanted content, or to the frame after the run it caused finished.
BENCH_JS = """
(() => {
  const bench = (window.__bench = { t0: null, t1: null });
  const heading = (selector) => {
    const el = document.querySelector(selector);
    return el ? el.textContent.trim() : null;
  };
  bench.heading = heading;
  bench.arm = (selector, text) => {
    bench.t0 = null;
    bench.t1 = null;
    bench.runsBefore = window.__stalwartRuns.finished;
    const down = (event) => { bench.t0 = event.timeStamp; };
    document.addEventListener("pointerdown", down, { capture: true, once: true });
    if (selector === null) return;
    const observer = new MutationObserver(() => {
      if (bench.t1 === null && heading(selector) === text) {
        bench.t1 = performance.now();
        observer.disconnect();
      }
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true });
  };
  bench.settled = () => {
    const runs = window.__stalwartRuns;
    const app = document.querySelector('[data-testid="stApp"]');
    return runs.finished > bench.runsBefore && bench.t0 !== null
      && app.getAttribute("data-test-script-state") === "notRunning"
      ? runs.settledAt - bench.t0 : null;
  };
})();
"""


@dataclass
class Tab:
    """A browser tab on one server, and what a scenario keeps between its iterations."""

    page: Page
    server: Server
    state: dict[str, Any] = field(default_factory=dict)

    def open(self, query: str = "") -> None:
        """Load the app (optionally with a query string) and wait for its first run."""
        self.page.goto(f"{self.server.url}/?{query}" if query else self.server.url)
        wait_for_app_idle(self.page)
        if "/auth/" in self.page.url or self.heading() == ws_driver.SIGN_IN_PAGE_TITLE:
            raise ws_driver.SignInPageError(f"the browser got the sign-in page: {self.page.url}")

    def idle(self, after_runs: int) -> None:
        """Wait until a run that finished after ``after_runs`` runs, and the app is idle."""
        wait_for_app_idle(self.page, after_runs=after_runs, timeout_ms=STEP_TIMEOUT_MS)

    def heading(self) -> str | None:
        """The main area's first h1, as the in-page observer reads it."""
        text = self.page.evaluate("(s) => window.__bench.heading(s)", MAIN_HEADING)
        return str(text) if text is not None else None


BrowserScenario = Callable[[Tab], float]
BROWSER_SCENARIOS: dict[str, BrowserScenario] = {}


def browser_scenario(name: str) -> Callable[[BrowserScenario], BrowserScenario]:
    """Register a browser scenario: a function that does one interaction and returns its ms."""

    def register(fn: BrowserScenario) -> BrowserScenario:
        BROWSER_SCENARIOS[name] = fn
        return fn

    return register


@browser_scenario("page switch")
def page_switch(tab: Tab) -> float:
    """Click the other page's navigation control; ms until its heading is in the DOM."""
    if "targets" not in tab.state:
        tab.open()
        headings = []
        for selector in reversed(tab.server.profile.nav):  # other page, then back
            before = app_run_count(tab.page)
            tab.page.locator(selector).click()
            tab.idle(before)
            tab.page.wait_for_timeout(100)  # let the last elements of the page land
            headings.append(tab.heading())
        if None in headings or headings[0] == headings[1]:
            raise ScenarioUnavailable(f"no distinct page headings: {headings}")
        # Alternate: to the other page, then back to the first.
        tab.state["targets"] = list(zip(reversed(tab.server.profile.nav), headings, strict=True))
        tab.state["next"] = 0
    selector, heading = tab.state["targets"][tab.state["next"] % 2]
    tab.state["next"] += 1
    before = app_run_count(tab.page)
    tab.page.evaluate("([s, t]) => window.__bench.arm(s, t)", [MAIN_HEADING, heading])
    tab.page.locator(selector).click()
    tab.page.wait_for_function(
        "() => window.__bench.t1 !== null && window.__bench.t0 !== null",
        timeout=STEP_TIMEOUT_MS,
    )
    elapsed = float(tab.page.evaluate("() => window.__bench.t1 - window.__bench.t0"))
    tab.idle(before)
    return elapsed


@browser_scenario("select settled")
def select_settled(tab: Tab) -> float:
    """Pick the next option of the first selectbox; ms until its rerun finished and painted."""
    box = tab.page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').first
    if "options" not in tab.state:
        tab.open(tab.server.profile.form_query)
        try:
            box.wait_for(timeout=STEP_TIMEOUT_MS)
        except PlaywrightTimeoutError as err:
            raise ScenarioUnavailable("no selectbox on the form page") from err
        box.click()
        options = tab.page.get_by_role("option")
        options.first.wait_for()
        tab.state["options"] = [text.strip() for text in options.all_inner_texts()]
        tab.page.keyboard.press("Escape")
        if len(tab.state["options"]) < 2:
            raise ScenarioUnavailable("the selectbox has fewer than two options")
        tab.state["next"] = 1
    options = tab.state["options"]
    option = options[tab.state["next"] % len(options)]
    tab.state["next"] += 1
    box.click()  # open the list: not timed, as a user's eyes find the option
    choice = tab.page.get_by_role("option", name=option, exact=True)
    choice.wait_for()
    before = app_run_count(tab.page)
    tab.page.evaluate("() => window.__bench.arm(null, null)")
    choice.click()
    handle = tab.page.wait_for_function("() => window.__bench.settled()", timeout=STEP_TIMEOUT_MS)
    elapsed = float(handle.json_value())
    tab.idle(before)
    return elapsed


@browser_scenario("keystroke server work")
def keystroke_server_work(tab: Tab) -> float:
    """Type one character into the form's text area; ms from the rerun it causes being sent to
    its script_finished (the server's work plus a loopback round trip).

    Plain Streamlit sends nothing while a text area is typed into (the text is lost on a
    reload), so for it there is nothing to time and the scenario says so.
    """
    area = tab.page.locator('[data-testid="stMain"] textarea').first
    if "ready" not in tab.state:
        tab.open(tab.server.profile.form_query)
        area.wait_for(timeout=STEP_TIMEOUT_MS)
        area.click()
        tab.state["ready"] = True
    before = app_run_count(tab.page)
    sent_before = tab.page.evaluate("() => window.__stalwartRuns.requested")
    tab.page.keyboard.type("x")
    try:
        tab.page.wait_for_function(
            "(n) => window.__stalwartRuns.requested > n", arg=sent_before, timeout=2000
        )
    except PlaywrightTimeoutError as err:
        raise ScenarioUnavailable("typing sends nothing to the server") from err
    tab.idle(before)
    return float(
        tab.page.evaluate(
            "() => window.__stalwartRuns.receivedAt - window.__stalwartRuns.requestedAt"
        )
    )


def measure_browser(
    browser: Browser, server: Server, iterations: int, warmup: int, budget_s: float
) -> dict[str, Any]:
    """Every registered browser scenario against ``server``, each in a fresh profile."""
    results: dict[str, Any] = {}
    for name, scenario in BROWSER_SCENARIOS.items():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.add_init_script(RUN_WATCHER_JS)
        context.add_init_script(BENCH_JS)
        # A signed-in browser: its own sign-in's cookies (HttpOnly, as the server sets them).
        context.add_cookies(
            [
                {"name": k, "value": v, "url": server.url, "httpOnly": True, "sameSite": "Lax"}
                for k, v in server.login_cookies().items()
            ]
        )
        tab = Tab(context.new_page(), server)
        samples: list[float] = []
        deadline = time.monotonic() + budget_s
        try:
            for i in range(warmup + iterations):
                if time.monotonic() > deadline:
                    break
                elapsed = scenario(tab)
                if i >= warmup:
                    samples.append(elapsed)
            results[name] = summarise(samples).as_dict()
        except ScenarioUnavailable as err:
            results[name] = {"unavailable": str(err)}
        except Exception as err:
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            traceback.print_exc(file=sys.stderr)
        finally:
            context.close()
    return results


# --- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    chromium = "not found"
    if shutil.which(CHROMIUM):
        done = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        chromium = done.stdout.strip() or "unknown"
    import streamlit

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "streamlit": streamlit.__version__,
        "chromium": chromium,
    }


@contextlib.contextmanager
def chromium() -> Iterator[Browser | None]:
    """Headless Chromium through Playwright, or None (with a note) if either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is not installed: skipping the browser measurements", file=sys.stderr)
        yield None
        return
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} not found: skipping the browser measurements", file=sys.stderr)
        yield None
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def cell(result: dict[str, Any] | None, with_max: bool = False) -> str:
    """``p50 / p95`` (and max) of a result, or why there is none."""
    if not result:
        return "—"
    if "p50_ms" not in result:
        return "n/a" if "unavailable" in result else "error"
    text = f"{result['p50_ms']:.1f} / {result['p95_ms']:.1f}"
    return f"{text} / {result['max_ms']:.1f}" if with_max else text


def ratio(results: dict[str, Any], slow: str, fast: str, part: str, scenario: str) -> str:
    """How many times faster ``fast`` is than ``slow`` at p50, as text."""
    try:
        a = results[slow][part][scenario]["p50_ms"]
        b = results[fast][part][scenario]["p50_ms"]
    except (KeyError, TypeError):
        return "—"
    return f"{a / b:.1f}x" if b else "—"


def report(doc: dict[str, Any]) -> str:
    """The results as markdown."""
    m, results = doc["machine"], doc["servers"]
    lines = [
        f"# Latency, {doc['finished_at']}",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}; Python {m['python']}, Streamlit "
        f"{m['streamlit']}, {m['chromium']}.",
        "",
        f"## Server round trip (websocket; ms p50 / p95 / max; n={doc['settings']['ws_n']})",
        "",
        "| server | select change | page switch | keystroke (server work) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results.values():
        ws = r.get("ws", {})
        lines.append(
            f"| {r['description']} | {cell(ws.get('select'), True)} "
            f"| {cell(ws.get('page switch'), True)} | {cell(ws.get('keystroke'), True)} |"
        )
    lines += [
        "",
        "## In headless Chromium (ms p50 / p95; "
        f"n={doc['settings']['browser_n']}; from the click's pointerdown)",
        "",
        "| server | page switch (new heading in the DOM) | select change settled "
        "| keystroke (its rerun, sent -> script_finished read by the page) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results.values():
        if "browser" in r:
            b = r["browser"]
            lines.append(
                f"| {r['description']} | {cell(b.get('page switch'))} "
                f"| {cell(b.get('select settled'))} | {cell(b.get('keystroke server work'))} |"
            )
    lines += ["", "## Ratios (p50, how many times faster)", ""]
    pairs = [
        ("plain-shipped", "plain-tuned", "plain tuned vs plain as shipped"),
        ("plain-shipped", "stalwart", "Stalwart vs plain as shipped"),
    ]
    lines += ["| comparison | ws select | ws page switch | browser page switch | browser select |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    for slow, fast, label in pairs:
        lines.append(
            f"| {label} | {ratio(results, slow, fast, 'ws', 'select')} "
            f"| {ratio(results, slow, fast, 'ws', 'page switch')} "
            f"| {ratio(results, slow, fast, 'browser', 'page switch')} "
            f"| {ratio(results, slow, fast, 'browser', 'select settled')} |"
        )
    notes = [
        f"- {name}: {field}: {r[part][field].get('unavailable') or r[part][field].get('error')}"
        for name, r in results.items()
        for part in ("ws", "browser")
        for field in r.get(part, {})
        if "p50_ms" not in r[part][field]
    ]
    if notes:
        lines += ["", "Not measured:", *notes]
    return "\n".join(lines)


def has_errors(entry: dict[str, Any]) -> bool:
    """Whether any measurement of a server failed (as opposed to not applying)."""
    parts = [entry.get("ws", {}), entry.get("browser", {})]
    return "error" in entry or any("error" in r for part in parts for r in part.values())


def main(argv: list[str] | None = None) -> int:
    """Run every server through every measurement; print markdown, write results/latest.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations, for a smoke run")
    parser.add_argument(
        "--servers", help="comma-separated subset of: " + ", ".join(s.name for s in SERVERS)
    )
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="local",
        help="Stalwart's sign-in: local (as shipped; plus the stalwart-auth-off row) or off",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    args = parser.parse_args(argv)
    ws_n, ws_warmup, browser_n, browser_warmup = (30, 5, 5, 2) if args.quick else (200, 20, 30, 5)
    budget_s = 60.0 if args.quick else 120.0
    chosen = set(args.servers.split(",")) if args.servers else {s.name for s in SERVERS}

    doc: dict[str, Any] = {
        "machine": machine(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {"ws_n": ws_n, "ws_warmup": ws_warmup, "browser_n": browser_n},
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="stalwart-bench-") as tmp, chromium() as browser:
        for server in with_auth([s for s in SERVERS if s.name in chosen], args.auth):
            print(f"== {server.name}: {server.description}", file=sys.stderr, flush=True)
            entry: dict[str, Any] = {"description": server.description}
            doc["servers"][server.name] = entry
            try:
                server.start(Path(tmp) / server.name)
                entry["ws"] = measure_ws(server, ws_n, ws_warmup, budget_s)
                if browser is not None and server.browser and not args.no_browser:
                    entry["browser"] = measure_browser(
                        browser, server, browser_n, browser_warmup, budget_s
                    )
            except Exception as err:
                entry["error"] = f"{type(err).__name__}: {err}"
                print(entry["error"], file=sys.stderr)
            finally:
                exited = server.process.poll() if server.process else None
                server.stop()
            if exited is not None or has_errors(entry):
                # Died or failed under measurement: keep why, for the reader of latest.json.
                entry["exit_code_during_run"] = exited
                entry["log_tail"] = server.log_tail(40) if server.workdir else ""
            print(json.dumps(entry), file=sys.stderr, flush=True)
    doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(report(doc))
    print(f"\n(written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
