"""Helpers for driving a Streamlit app in headless Chromium, and for measuring layout shift.

When is Streamlit done? The app's root, ``[data-testid="stApp"]``, shows the frontend's state
in ``data-test-script-state`` (``initial``, ``running``, ``notRunning``, ``rerunRequested``,
``stopRequested``, ``compilationError``) and ``data-test-connection-state`` (``CONNECTED``,
``CONNECTING``, ``PINGING_SERVER``, ``DISCONNECTED_FOREVER``, ...). That is not enough on its
own: a widget change does not set ``rerunRequested`` (only the "Rerun" menu does), and when the
server answers within a few milliseconds React renders ``running`` and ``notRunning`` in one
commit, so the attribute can read ``notRunning`` before, during and after a rerun.

So :data:`RUN_WATCHER_JS`, added to every page by :func:`prepare_context`, wraps the page's
``WebSocket`` to ``/_stcore/stream`` and counts the protocol's own events: ``rerun_script``
BackMsgs sent (``requested``) and ``script_finished`` ForwardMsgs received; a run counts as
``finished`` once the frame after its ``script_finished`` has been produced (Streamlit handles
messages asynchronously, then React renders). "Idle after an action" is then: the finished
count went up, no rerun asked for since is unanswered, and the root says ``notRunning`` and
``CONNECTED`` (:func:`expect_app_run`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM: Final = "/usr/bin/chromium"
BROWSER_ARGS: Final = [
    "--no-sandbox",  # we run as root in a container; Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# Bound for a wait on the app; a hang fails the test rather than stalling the run.
APP_TIMEOUT_MS: Final = 30_000

RUN_WATCHER_JS: Final = """
(() => {
  if (window.__stalwartRuns) return;
  const runs = (window.__stalwartRuns = {
    sockets: 0,       // websockets opened to /_stcore/stream (more than one: reconnects)
    messages: 0,      // ForwardMsgs received
    requested: 0,     // BackMsg.rerun_script sent (widget changes, page switches, reruns)
    requestedAt: null,// performance.now() when the last one was sent
    received: 0,      // ForwardMsg.script_finished received, whatever the status
    finished: 0,      // ... of those, not "finished early for a rerun", and rendered
    lastStatus: null, // ScriptFinishedStatus of the last one
    receivedAt: null, // performance.now() when the last script_finished arrived
    settledAt: null,  // performance.now() when the page had rendered it (next frame)
  });
  // The one protobuf field of a frame we care about, read without a protobuf library.
  const topLevelVarint = (bytes, wanted) => {
    let i = 0;
    const varint = () => {
      let value = 0, shift = 0, byte;
      do { byte = bytes[i++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; }
      while (byte & 0x80 && i < bytes.length);
      return value;
    };
    while (i < bytes.length) {
      const key = varint(), field = Math.floor(key / 8), wire = key % 8;
      if (wire === 0) { const value = varint(); if (field === wanted) return value; }
      else if (wire === 1) i += 8;
      else if (wire === 2) {
        if (field === wanted) return -1;
        const length = varint(); // not `i += varint()`: that adds to i as it was before the read
        i += length;
      }
      else if (wire === 5) i += 4;
      else return undefined;
    }
    return undefined;
  };
  const SCRIPT_FINISHED = 6, RERUN_SCRIPT = 11, FINISHED_EARLY_FOR_RERUN = 2;
  const watch = (ws) => {
    runs.sockets += 1;
    ws.addEventListener("message", (event) => {
      runs.messages += 1;
      if (!(event.data instanceof ArrayBuffer)) return;
      const status = topLevelVarint(new Uint8Array(event.data), SCRIPT_FINISHED);
      if (status === undefined) return;
      runs.received += 1;
      runs.lastStatus = status;
      runs.receivedAt = performance.now();
      if (status === FINISHED_EARLY_FOR_RERUN) return;
      // Streamlit handles the message asynchronously, then React renders: count the run
      // once the frame after it has been produced (or after 100 ms where no frames come,
      // as in a tab that is not visible).
      let counted = false;
      const count = () => {
        if (counted) return;
        counted = true;
        runs.finished += 1;
        runs.settledAt = performance.now();
      };
      setTimeout(() => {
        requestAnimationFrame(() => setTimeout(count, 0));
        setTimeout(count, 100);
      }, 0);
    });
    const send = ws.send.bind(ws);
    ws.send = (data) => {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
        : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : null;
      if (bytes && topLevelVarint(bytes, RERUN_SCRIPT) !== undefined) {
        runs.requested += 1;
        runs.requestedAt = performance.now();
      }
      return send(data);
    };
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      if (String(url).includes("/_stcore/stream")) watch(this);
    }
  };
})();
"""

CLS_OBSERVER_JS: Final = """
(() => {
  if (window.__stalwartCls) return;
  const cls = (window.__stalwartCls = { value: 0, shifts: 0 });
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      // Shifts within 500 ms of an input are expected (the user caused them) and not counted.
      if (!entry.hadRecentInput) {
        cls.value += entry.value;
        cls.shifts += 1;
      }
    }
  }).observe({ type: "layout-shift", buffered: true });
})();
"""


@cache
def browser_problem() -> str | None:
    """Why the browser tests cannot run here (no Chromium, no playwright), or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"the playwright package is not installed ({err})"
    return None


def prepare_context(context: BrowserContext) -> None:
    """Give every page of ``context`` the run watcher, before any of the app's own scripts."""
    context.set_default_timeout(APP_TIMEOUT_MS)
    context.add_init_script(RUN_WATCHER_JS)


def app_run_count(page: Page) -> int:
    """How many script runs (full or fragment) the page has seen finish so far."""
    return int(page.evaluate("() => window.__stalwartRuns ? window.__stalwartRuns.finished : 0"))


def wait_for_app_idle(
    page: Page, *, after_runs: int = 0, timeout_ms: float = APP_TIMEOUT_MS
) -> None:
    """Wait until more than ``after_runs`` runs finished and the app is idle.

    Idle: connected, not running, every rerun the page asked for answered (a request sent
    after the last ``script_finished`` keeps it waiting), and the last answer rendered.
    ``after_runs=0`` (the default) waits for the first run after load; to wait for the run an
    action causes, use :func:`expect_app_run`.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_function(
            """(after) => {
              const runs = window.__stalwartRuns;
              const app = document.querySelector('[data-testid="stApp"]');
              return !!runs && !!app && runs.finished > after
                // no run is announced (a run that ended early for a rerun has a successor) ...
                && runs.lastStatus !== 2
                // ... the last rerun asked for has been answered, and that answer rendered
                && (runs.requestedAt === null || runs.receivedAt >= runs.requestedAt)
                && runs.settledAt >= runs.receivedAt
                && app.getAttribute("data-test-script-state") === "notRunning"
                && app.getAttribute("data-test-connection-state") === "CONNECTED";
            }""",
            arg=after_runs,
            timeout=timeout_ms,
        )
    except PlaywrightTimeoutError as err:
        seen = page.evaluate("() => JSON.stringify(window.__stalwartRuns || null)")
        raise AssertionError(
            f"the app did not become idle after run {after_runs} within {timeout_ms} ms; "
            f"run watcher: {seen}"
        ) from err


@contextmanager
def expect_app_run(page: Page, *, timeout_ms: float = APP_TIMEOUT_MS) -> Iterator[None]:
    """Wait, after the block, for a script run that finished after the block began.

    with expect_app_run(page):
        page.locator('.st-key-nav a[data-target="settings"]').click()
    """
    before = app_run_count(page)
    yield
    wait_for_app_idle(page, after_runs=before, timeout_ms=timeout_ms)


def install_cls_observer(page: Page) -> None:
    """Start summing layout shifts (those without recent input) on ``page``.

    ``buffered`` reports shifts since navigation started too, so this can be called after
    ``goto``; to see every shift from the first paint, add ``CLS_OBSERVER_JS`` as an init
    script of the context instead.
    """
    page.evaluate(CLS_OBSERVER_JS)


def read_cls(page: Page) -> float:
    """The cumulative layout shift summed since :func:`install_cls_observer`."""
    return float(page.evaluate("() => window.__stalwartCls ? window.__stalwartCls.value : 0"))
