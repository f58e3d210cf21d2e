"""A headless client of Streamlit's websocket protocol, for timing the server's side of a rerun.

It speaks what the browser speaks on ``/_stcore/stream`` (subprotocols ``streamlit`` and any
token): it sends ``BackMsg.rerun_script`` with the widget states a browser would send and reads
``ForwardMsg``s until ``script_finished``. The time from send to ``script_finished`` is the
server round trip: network, session handling, the script run, and whatever Streamlit does
around it (the post-run garbage collection, Nagle's delays on the socket).

    uv run python bench/ws_driver.py --url http://127.0.0.1:8501 --scenario select -n 200

A scenario is an async function ``(session) -> sample_ms`` run again and again; several
sessions can run at once (``--sessions``), each on its own websocket, as several tabs would.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.typing import Subprotocol

# Bounds so that a stuck server ends the benchmark instead of hanging it.
RUN_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0


class ScenarioUnavailable(Exception):
    """The app does not have what a scenario needs (e.g. no selectbox on the page)."""


@dataclass
class Element:
    """One element of the last run, as the driver needs it: its type, widget id and proto."""

    kind: str
    widget_id: str
    proto: Any
    fragment_id: str = ""


@dataclass
class RunResult:
    """Everything one script run sent, and how long it took from our send."""

    messages: list[ForwardMsg]
    elapsed_ms: float

    @property
    def finished(self) -> int:
        """The ``script_finished`` status of the run."""
        return int(self.messages[-1].script_finished)

    def elements(self) -> list[Element]:
        """The new elements the run drew, in order, with their widget ids (empty if none)."""
        found = []
        for msg in self.messages:
            if msg.WhichOneof("type") != "delta":
                continue
            if msg.delta.WhichOneof("type") != "new_element":
                continue
            kind = msg.delta.new_element.WhichOneof("type") or ""
            proto = getattr(msg.delta.new_element, kind) if kind else None
            widget_id = getattr(proto, "id", "") if proto is not None else ""
            found.append(
                Element(
                    kind,
                    widget_id if isinstance(widget_id, str) else "",
                    proto,
                    msg.delta.fragment_id,
                )
            )
        return found

    def app_pages(self) -> list[Any]:
        """The pages ``st.navigation`` declared in this run (empty for a one-page app)."""
        pages: list[Any] = []
        for msg in self.messages:
            if msg.WhichOneof("type") == "navigation":
                pages = list(msg.navigation.app_pages)
        return pages


@dataclass
class Session:
    """One browser tab's worth of protocol: a websocket and the widget states it has sent."""

    ws: Any
    query_string: str = ""
    page_script_hash: str = ""
    widget_states: dict[str, WidgetState] = field(default_factory=dict)
    last: RunResult | None = None
    timeout_s: float = RUN_TIMEOUT_S  # one interaction's bound, until its script_finished

    async def rerun(
        self,
        changes: list[WidgetState] | None = None,
        *,
        page_script_hash: str | None = None,
        query_string: str | None = None,
        fragment_id: str = "",
    ) -> RunResult:
        """Send one ``rerun_script`` (with ``changes`` on top of the kept states) and time it
        until its last run has finished.

        A widget inside an ``st.fragment`` reruns only its fragment: pass its ``fragment_id``,
        as the browser does.
        """
        if page_script_hash is not None:
            self.page_script_hash = page_script_hash
        if query_string is not None:
            self.query_string = query_string
        back = BackMsg()
        state = back.rerun_script
        state.query_string = self.query_string
        state.page_script_hash = self.page_script_hash
        state.fragment_id = fragment_id
        for change in changes or []:
            self.widget_states[change.id] = change
        state.widget_states.widgets.extend(self.widget_states.values())
        received: list[ForwardMsg] = []
        started = time.perf_counter()
        await self.ws.send(back.SerializeToString())
        async with asyncio.timeout(self.timeout_s):
            while True:
                msg = ForwardMsg()
                msg.ParseFromString(await self.ws.recv())
                received.append(msg)
                # A run that a callback replaced with another (a rerun of another fragment,
                # asked for by key) ends "early for rerun"; the interaction is over when the
                # run that replaced it has finished.
                if (
                    msg.WhichOneof("type") == "script_finished"
                    and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN
                ):
                    break
        result = RunResult(received, (time.perf_counter() - started) * 1000)
        # A trigger (button click) fires once; the browser does not send it again.
        for change in changes or []:
            if change.WhichOneof("value") == "trigger_value":
                self.widget_states.pop(change.id, None)
        self.last = result
        return result


def stream_url(base_url: str) -> str:
    """The websocket URL of the Streamlit app served at ``base_url`` (http://host:port)."""
    return base_url.replace("http://", "ws://", 1).rstrip("/") + "/_stcore/stream"


SIGN_IN_PAGE_TITLE = "Sign in"  # st.title of Stalwart's prompt for a session not signed in
LOGIN_COOKIE = "stalwart_login"


class SignInPageError(RuntimeError):
    """The server drew its "Sign in" prompt instead of the app: the session is not signed in,
    and whatever was being measured was not the app."""


def sign_in_problem(result: RunResult | None) -> str | None:
    """Why ``result`` is Stalwart's sign-in prompt rather than an app page, or None."""
    if result is None:
        return None
    for element in result.elements():
        if element.kind == "heading" and element.proto.body.strip() == SIGN_IN_PAGE_TITLE:
            return 'the run drew the "Sign in" page, not the app'
        if element.kind == "bidi_component" and "redirect" in element.proto.component_name:
            return "the run redirected the browser (to the sign-in page)"
    return None


def check_signed_in(result: RunResult | None) -> None:
    """Fail loudly if ``result`` is the sign-in prompt (see ``sign_in_problem``)."""
    problem = sign_in_problem(result)
    if problem:
        raise SignInPageError(problem)


async def sign_in(
    base_url: str, username: str, password: str, *, setup: bool = False
) -> dict[str, str]:
    """Sign in over HTTP as a browser does (the form's POST, from this app's origin); returns
    the cookies it was given (``stalwart_login``, and ``stalwart_sid`` if set).

    ``setup=True`` posts to ``/auth/setup`` instead: creates the first administrator (only
    while no account exists, only from this machine) and signs in as it.
    """
    base = base_url.rstrip("/")
    form = {"username": username, "password": password, "next": "/"}
    if setup:
        form["password2"] = password
    async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S) as http:
        response = await http.post(
            f"{base}/auth/{'setup' if setup else 'login'}", data=form, headers={"Origin": base}
        )
        cookies = dict(http.cookies.items())
    if response.status_code != 303 or LOGIN_COOKIE not in cookies:
        raise RuntimeError(
            f"sign-in as {username!r} failed: HTTP {response.status_code}, cookies "
            f"{sorted(cookies)}: {response.text[:300]!r}"
        )
    return cookies


async def open_session(
    base_url: str,
    query_string: str = "",
    credentials: tuple[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> tuple[Session, Any]:
    """Connect like a browser and run the script once; returns the session and its socket.

    Like a browser, it signs in first if given ``credentials`` (username, password: its own
    ``stalwart_login`` token), or uses ``cookies`` it already has (a signed-in browser's), then
    loads the page over HTTP and sends every cookie it holds (the login cookie, Stalwart's
    identity cookie) with the websocket handshake. Raises ``SignInPageError`` if the first run
    is nonetheless the sign-in page.
    """
    jar = dict(cookies or {})
    if credentials is not None:
        jar.update(await sign_in(base_url, *credentials))
    async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S, cookies=jar) as http:
        await http.get(f"{base_url.rstrip('/')}/?{query_string}")
        jar = dict(http.cookies.items())
    cookie = "; ".join(f"{name}={value}" for name, value in jar.items())
    ws = await asyncio.wait_for(
        websockets.connect(
            stream_url(base_url),
            subprotocols=[Subprotocol("streamlit"), Subprotocol("bench")],
            additional_headers={"Cookie": cookie} if cookie else None,
        ),
        CONNECT_TIMEOUT_S,
    )
    session = Session(ws, query_string=query_string)
    try:
        check_signed_in(await session.rerun())
    except BaseException:
        await ws.close()
        raise
    return session, ws


# --- scenarios: each returns the round trip of one interaction in ms ----------------------

Scenario = Callable[[Session], Awaitable[float]]


def select_change() -> Scenario:
    """Change the first selectbox on the page to its next option, as a user picking one."""
    values: Iterator[str] | None = None
    box = Element("", "", None)

    async def one(session: Session) -> float:
        nonlocal values, box
        if values is None:
            assert session.last is not None
            boxes = [e for e in session.last.elements() if e.kind == "selectbox"]
            if not boxes:
                raise ScenarioUnavailable("no st.selectbox on the page")
            box = boxes[0]
            options = list(box.proto.options)
            if len(options) < 2:
                raise ScenarioUnavailable("the selectbox has fewer than two options")
            # Start from the second option so that the first sample is a real change.
            values = itertools.cycle(options[1:] + options[:1])
        change = WidgetState(id=box.widget_id, string_value=next(values))
        return (await session.rerun([change], fragment_id=box.fragment_id)).elapsed_ms

    return one


def page_switch_navigation() -> Scenario:
    """Alternate between the first two pages of an ``st.navigation`` app."""
    hashes: Iterator[str] | None = None

    async def one(session: Session) -> float:
        nonlocal hashes
        if hashes is None:
            assert session.last is not None
            pages = [p.page_script_hash for p in session.last.app_pages()]
            if len(pages) < 2:
                raise ScenarioUnavailable("no st.navigation with two pages")
            hashes = itertools.cycle([pages[1], pages[0]])
        return (await session.rerun(page_script_hash=next(hashes))).elapsed_ms

    return one


def page_switch_query(first: str, second: str) -> Scenario:
    """Alternate between two URLs' query strings, as a link of Stalwart's router does (the
    browser pushes the URL and reruns with it; no widget changes)."""
    queries = itertools.cycle([second, first])

    async def one(session: Session) -> float:
        return (await session.rerun(query_string=next(queries))).elapsed_ms

    return one


def keystroke(field: str = "summary") -> Scenario:
    """Send what Stalwart's browser journal sends after a keystroke: its outbox, one more
    character typed into ``field``, as the journal component's new state.

    The outbox is numbered and cumulative; the server acknowledges through the component's
    data, so each send carries the one new item, as the journal does once the earlier ones
    were acknowledged.
    """
    journal = Element("", "", None)
    counter = itertools.count(1)
    text = ""

    async def one(session: Session) -> float:
        nonlocal journal, text
        if not journal.widget_id:
            assert session.last is not None
            found = [
                e
                for e in session.last.elements()
                if e.kind == "bidi_component" and "journal" in e.proto.component_name
            ]
            if not found:
                raise ScenarioUnavailable("no browser journal on the page (plain Streamlit)")
            journal = found[0]
        text += "x"
        item = {"id": next(counter), "kind": "typed", "field": field, "v": text, "base": 0}
        change = WidgetState(
            id=journal.widget_id, json_value=json.dumps({"outbox": {"items": [item]}})
        )
        return (await session.rerun([change], fragment_id=journal.fragment_id)).elapsed_ms

    return one


def text_commit(text: Callable[[], str]) -> Scenario:
    """Commit ``text()`` as the first text area's value, as the browser does when the area
    loses focus (plain Streamlit sends nothing while it is typed into)."""
    area = Element("", "", None)

    async def one(session: Session) -> float:
        nonlocal area
        if not area.widget_id:
            assert session.last is not None
            found = [e for e in session.last.elements() if e.kind == "text_area"]
            if not found:
                raise ScenarioUnavailable("no st.text_area on the page")
            area = found[0]
        change = WidgetState(id=area.widget_id, string_value=text())
        return (await session.rerun([change], fragment_id=area.fragment_id)).elapsed_ms

    return one


# --- running and summarising ---------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Percentiles of a list of samples in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float | int]:
        """Rounded for printing and for results/latest.json."""
        return {
            "n": self.n,
            "p50_ms": round(self.p50, 3),
            "p95_ms": round(self.p95, 3),
            "p99_ms": round(self.p99, 3),
            "max_ms": round(self.max, 3),
            "mean_ms": round(self.mean, 3),
        }


def nearest_rank(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1) of sorted samples by the nearest-rank method: a value
    that was measured, not an interpolation."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summarise(samples: list[float]) -> Summary:
    """p50, p95, p99 (nearest rank), max and mean of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return Summary(
        n=len(ordered),
        p50=statistics.median(ordered),
        p95=nearest_rank(ordered, 0.95),
        p99=nearest_rank(ordered, 0.99),
        max=ordered[-1],
        mean=statistics.fmean(ordered),
    )


async def measure(
    base_url: str,
    make_scenario: Callable[[], Scenario],
    *,
    iterations: int = 200,
    warmup: int = 20,
    sessions: int = 1,
    query_string: str = "",
    budget_s: float = 120.0,
    credentials: tuple[str, str] | None = None,
) -> list[float]:
    """Run the scenario ``iterations`` times per session (after ``warmup``); all samples in ms.

    Stops at ``budget_s`` seconds whatever the count, so a slow server cannot hang the run.
    With ``credentials`` each session signs in first (its own login token); every run is
    checked not to be the sign-in page (``SignInPageError``).
    """
    deadline = time.monotonic() + budget_s

    async def one_session() -> list[float]:
        session, ws = await open_session(base_url, query_string, credentials)
        scenario = make_scenario()
        samples: list[float] = []
        try:
            for i in range(warmup + iterations):
                if time.monotonic() > deadline:
                    break
                elapsed = await scenario(session)
                check_signed_in(session.last)
                if i >= warmup:
                    samples.append(elapsed)
        finally:
            await ws.close()
        return samples

    results = await asyncio.gather(*(one_session() for _ in range(sessions)))
    return [sample for samples in results for sample in samples]


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "select": select_change,
    "page-switch-navigation": page_switch_navigation,
    "page-switch-stalwart": lambda: page_switch_query("page=home", "page=settings"),
    "keystroke": keystroke,
}


def main(argv: list[str] | None = None) -> int:
    """Command line: time one scenario against a running server and print the percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="select")
    parser.add_argument("-n", "--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--query-string", default="")
    parser.add_argument("--username", help="sign in as this user first (STALWART_AUTH_MODE=local)")
    parser.add_argument("--password", default="", help="with --username")
    args = parser.parse_args(argv)
    samples = asyncio.run(
        measure(
            args.url,
            SCENARIOS[args.scenario],
            iterations=args.iterations,
            warmup=args.warmup,
            sessions=args.sessions,
            query_string=args.query_string,
            credentials=(args.username, args.password) if args.username else None,
        )
    )
    print(summarise(samples).as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
