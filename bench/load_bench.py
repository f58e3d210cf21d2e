"""Many users at once: Stalwart's form page against plain Streamlit's, over the websocket.

    uv run python bench/load_bench.py              # about five minutes
    uv run python bench/load_bench.py --quick      # about a minute and a half
    uv run python bench/load_bench.py --profile 50 # then where Stalwart's CPU goes (py-spy)

Starts plain Streamlit as shipped (``bench/plain_app.py``), the same with Stalwart's server
tuning, and Stalwart (``app run``), each on a free 127.0.0.1 port (``run_bench.SERVERS``).
Stalwart runs with sign-in as shipped (STALWART_AUTH_MODE=local): each simulated user signs in
over HTTP first (its own login token; timed apart) and every run is checked to be the app, not
the "Sign in" page. ``stalwart-auth-off`` is the same app without sign-in, measured in the same
run, for the line giving what sign-in costs an interaction; ``--auth off`` runs every Stalwart
server without sign-in.
Then, for N = 1, 10 and 50 sessions and each app in turn, N simulated users (each its own
websocket and cookies, as N browser tabs; ``bench/ws_driver.py``) use the form page for a
fixed time. A user does, in a seeded random order, with a think time between actions:

- **typing** a few characters into the text area: Stalwart's browser journal sends each
  keystroke (a ``keystroke`` interaction, about 0.12-0.3 s apart), plain Streamlit sends
  nothing; then the area loses focus and its value is committed (``text commit``, both apps);
- **select**: picks the next option of the form's selectbox;
- **page switch**: goes to the other page (plain: the 50-row table page; Stalwart: the
  settings page, a table too), thinks, and comes back to the form (two interactions).

Every interaction is timed from the ``rerun_script`` sent to its ``script_finished``: the
server's work plus a loopback round trip. An interaction that times out, whose connection
fails, whose run does not finish successfully or that draws an exception is an error, not a
sample; a session whose connection failed is reopened. Both apps get the same users (same
seeds: the same actions and think times). The N sessions connect before the timed phase, a
few at a time, and warm up (one of each interaction); that time is reported apart.

Reported per N, app and interaction kind: n, p50/p95/p99/max ms, errors, achieved
interactions/s, the CPU the server and this driver used (they share the machine), and the
Stalwart / plain ratio of p50 and p95 for the interactions both apps have. Sessions closed at
the end of a level stay in the server for Streamlit's ``server.disconnectedSessionTTL``
(120 s), as closed tabs do, in every app alike. ``--profile N`` runs N sessions on Stalwart
once more with ``py-spy record --gil`` attached (``uv pip install py-spy``; not a dependency)
and lists where the server's GIL time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ws_driver
from benchlib import (
    RESULTS,
    cpu_seconds,
    ms_cell,
    prepare_like_the_app,
    run_part,
    stats,
)
from run_bench import AUTH_MODES, SERVERS, Server, with_auth
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from ws_driver import Scenario, ScenarioUnavailable, Session

LEVELS = (1, 10, 50)
APPS = ("plain-shipped", "plain-tuned", "stalwart", "stalwart-auth-off", "stalwart-gc-every-run")
BASELINE = "plain-tuned"  # Stalwart ships the same server tuning
THINK_S = (0.3, 1.5)  # between a user's actions
KEY_GAP_S = (0.12, 0.3)  # between keystrokes; the journal sends at most every 120 ms
BURST = (3, 8)  # characters typed in one go
ACTIONS = {"type": 0.5, "select": 0.3, "page switch": 0.2}  # how often a user does each
CONNECT_PARALLEL = 2  # sessions opening at once (each costs a full script run)
INTERACTION_TIMEOUT_S = 10.0
CONNECT_BUDGET_S = 120.0  # for all N sessions to connect and warm up
KINDS = ("keystroke", "text commit", "select", "page switch")
SHARED = ("text commit", "select", "page switch")  # what both apps do, for the ratios
TARGET_P95_MS, TARGET_N, TARGET_RATIO = 50.0, 10, 1.3
PY_SPY = Path(sys.executable).parent / "py-spy"
OK_STATUSES = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}


def run_problem(result: ws_driver.RunResult | None) -> str | None:
    """Why a finished run is not a success (its status, an exception drawn, the sign-in page
    instead of the app), or None."""
    if result is None:
        return "no run"
    signed_out = ws_driver.sign_in_problem(result)
    if signed_out:
        return signed_out
    if result.finished not in OK_STATUSES:
        return f"script_finished status {result.finished}"
    if any(e.kind == "exception" for e in result.elements()):
        return "exception in the script"
    return None


@dataclass
class Tally:
    """What one level (N sessions of one app for a while) collected."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    connect_ms: list[float] = field(default_factory=list)
    sign_in_ms: list[float] = field(default_factory=list)
    reconnects: int = 0

    def error(self, kind: str, what: str) -> None:
        """Count one failed interaction (or connect) of ``kind``."""
        self.errors[kind][what] += 1


class User:
    """One simulated user of one app: a session on the form page, and what it does there."""

    def __init__(self, server: Server, rng: random.Random, timeout_s: float) -> None:
        self.server, self.rng, self.timeout_s = server, rng, timeout_s
        self.stalwart = server.profile.kind == "stalwart"
        self.session: Session | None = None
        self.ws: Any = None
        self.typed = 0
        self.cookies: dict[str, str] | None = None  # this user's sign-in, kept across reloads

    async def sign_in(self, tally: Tally) -> None:
        """With sign-in on: sign in over HTTP once (its own login token), timed apart."""
        if self.cookies is not None or self.server.credentials is None:
            return
        started = time.perf_counter()
        self.cookies = await asyncio.wait_for(
            ws_driver.sign_in(self.server.url, *self.server.credentials), self.timeout_s
        )
        tally.sign_in_ms.append((time.perf_counter() - started) * 1000)

    async def connect(self, tally: Tally) -> None:
        """Open the session (a browser loading the form page); time it; fresh scenarios.
        Signs in first if the server wants it (not in the connect time); fails loudly
        (``SignInPageError``) if the page is the sign-in prompt nonetheless."""
        await self.sign_in(tally)
        started = time.perf_counter()
        query = self.server.profile.form_query
        session, self.ws = await asyncio.wait_for(
            ws_driver.open_session(self.server.url, query, cookies=self.cookies), self.timeout_s
        )
        tally.connect_ms.append((time.perf_counter() - started) * 1000)
        session.timeout_s = self.timeout_s
        self.session = session
        self.typed = 0
        self.select = ws_driver.select_change()
        self.commit = ws_driver.text_commit(lambda: "x" * self.typed)
        self.keystroke = ws_driver.keystroke()
        self.page_switch: Scenario = (
            ws_driver.page_switch_query(query, "page=settings")
            if self.stalwart
            else ws_driver.page_switch_navigation()
        )

    async def warm_up(self) -> None:
        """One of each interaction, not recorded. A scenario finds its widget in the run it
        is shown first: the page's full run, not the fragment run of the step before."""
        assert self.session is not None
        page = self.session.last
        steps: list[Scenario] = [self.select, self.commit, self.page_switch, self.page_switch]
        if self.stalwart:
            steps.append(self.keystroke)
        for step in steps:
            self.session.last = page
            if step is self.keystroke:
                self.typed += 1
            await step(self.session)
            problem = run_problem(self.session.last)
            if problem:
                raise RuntimeError(f"warm-up: {problem}")
            if step is self.page_switch:
                self.prune()
                page = self.session.last

    def prune(self) -> None:
        """Forget the states of widgets the last (full-page) run did not draw, as the browser
        does after a page switch."""
        assert self.session is not None
        assert self.session.last is not None
        drawn = {e.widget_id for e in self.session.last.elements() if e.widget_id}
        states = self.session.widget_states
        self.session.widget_states = {k: v for k, v in states.items() if k in drawn}

    async def close(self) -> None:
        """Close the websocket (quietly: the server may already have dropped it)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        self.session = self.ws = None

    async def interaction(self, kind: str, scenario: Scenario, tally: Tally) -> bool:
        """One timed interaction; its sample or its error. False if the session broke."""
        assert self.session is not None
        try:
            elapsed = await scenario(self.session)
        except TimeoutError:
            tally.error(kind, "timeout")
            return False
        except ScenarioUnavailable:
            raise
        except Exception as err:
            tally.error(kind, type(err).__name__)
            return False
        problem = run_problem(self.session.last)
        if problem:
            tally.error(kind, problem)
        else:
            tally.samples[kind].append(elapsed)
        return True

    async def think(self) -> None:
        """A user's pause between actions."""
        await asyncio.sleep(self.rng.uniform(*THINK_S))

    async def type_text(self, deadline: float, tally: Tally) -> bool:
        """A few keystrokes (Stalwart's journal sends each), then the commit on blur."""
        for _ in range(self.rng.randint(*BURST)):
            if time.monotonic() >= deadline:
                return True
            self.typed += 1
            if self.stalwart and not await self.interaction("keystroke", self.keystroke, tally):
                return False
            await asyncio.sleep(self.rng.uniform(*KEY_GAP_S))
        return await self.interaction("text commit", self.commit, tally)

    async def switch_page(self, deadline: float, tally: Tally) -> bool:
        """To the other page, a think, and back to the form."""
        if not await self.interaction("page switch", self.page_switch, tally):
            return False
        self.prune()
        await self.think()
        if time.monotonic() >= deadline:
            return True
        ok = await self.interaction("page switch", self.page_switch, tally)
        self.prune()
        return ok

    async def run(self, deadline: float, tally: Tally) -> None:
        """Act until ``deadline``; reopen the session (and warm it up, unrecorded) if an
        interaction broke it."""
        actions: dict[str, Callable[[float, Tally], Awaitable[bool]]] = {
            "type": self.type_text,
            "select": lambda _d, t: self.interaction("select", self.select, t),
            "page switch": self.switch_page,
        }
        await asyncio.sleep(self.rng.uniform(0, THINK_S[1]))  # users do not start in step
        while time.monotonic() < deadline:
            if self.session is None and not await self.reopen(tally):
                await self.think()
                continue
            name = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            if not await actions[name](deadline, tally):
                await self.close()
            await self.think()

    async def reopen(self, tally: Tally) -> bool:
        """A new session after a broken one (a reload), warmed up; False if that failed."""
        tally.reconnects += 1
        try:
            await self.connect(tally)
            await self.warm_up()
        except Exception as err:
            tally.error("connect", type(err).__name__)
            await self.close()
            return False
        return True


async def run_level(
    server: Server,
    n: int,
    seconds: float,
    seed: int,
    timed: contextlib.AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """N users on ``server`` for ``seconds``: connect and warm up, then the timed phase
    (inside ``timed``, e.g. a profiler, if given)."""
    tally = Tally()
    # The same seeds for every app: the same users doing the same things.
    rngs = [random.Random(f"{seed}-{n}-{i}") for i in range(n)]
    users = [User(server, rng, INTERACTION_TIMEOUT_S) for rng in rngs]
    gate = asyncio.Semaphore(CONNECT_PARALLEL)

    async def arrive(user: User) -> None:
        async with gate:
            try:
                await user.connect(tally)
                await user.warm_up()
            except (ScenarioUnavailable, ws_driver.SignInPageError):
                raise
            except Exception as err:
                tally.error("connect", f"{type(err).__name__}: {err}"[:120])
                await user.close()

    try:
        connect_started = time.monotonic()
        try:
            async with asyncio.timeout(CONNECT_BUDGET_S):
                await asyncio.gather(*(arrive(u) for u in users))
        except TimeoutError:
            tally.error("connect", f"not all connected in {CONNECT_BUDGET_S:g} s")
        connect_s = time.monotonic() - connect_started
        ready = [u for u in users if u.session is not None]
        assert server.process is not None
        cpu_server, cpu_self = cpu_seconds(server.process.pid), time.process_time()
        with timed or contextlib.nullcontext():
            started = time.monotonic()
            tasks = [asyncio.create_task(u.run(started + seconds, tally)) for u in ready]
            # An action under way at the deadline finishes (or times out): a page switch's
            # return is skipped, so one interaction's timeout and a think bound the wait.
            done, stuck = await asyncio.wait(tasks, timeout=seconds + INTERACTION_TIMEOUT_S + 5)
            elapsed = time.monotonic() - started
        cpu_server = cpu_seconds(server.process.pid) - cpu_server
        cpu_self = time.process_time() - cpu_self
        for task in stuck:
            task.cancel()
            tally.error("session", "still busy at the end")
        for task in done:
            if task.exception() is not None:
                tally.error("session", f"driver: {task.exception()!r}"[:120])
    finally:
        await asyncio.gather(*(u.close() for u in users))
    every = [s for kind in KINDS for s in tally.samples.get(kind, [])]
    errors = sum(sum(c.values()) for c in tally.errors.values())
    return {
        "sessions": n,
        "sessions_connected": len(ready),
        "connect_and_warm_up_s": round(connect_s, 1),
        "connect": stats(tally.connect_ms),
        "sign_in": stats(tally.sign_in_ms),
        "seconds": round(elapsed, 1),
        "interactions_per_s": round(len(every) / elapsed, 1),
        "kinds": {
            kind: {**stats(tally.samples[kind]), "errors": dict(tally.errors.get(kind, {}))}
            for kind in KINDS
            if kind in tally.samples or kind in tally.errors
        },
        "all": stats(every),
        "errors": errors,
        "error_detail": {k: dict(v) for k, v in tally.errors.items()},
        "reconnects": tally.reconnects,
        "server_cpu_pct": round(100 * cpu_server / elapsed),
        "driver_cpu_pct": round(100 * cpu_self / elapsed),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def ratios(levels: dict[str, dict[str, Any]], app: str, base: str) -> dict[str, Any]:
    """``app`` / ``base`` at p50 and p95 for each interaction both have, per N."""
    out: dict[str, Any] = {}
    for n, by_app in levels.items():
        row = {}
        for kind in SHARED:
            a = by_app.get(app, {}).get("kinds", {}).get(kind, {})
            b = by_app.get(base, {}).get("kinds", {}).get(kind, {})
            if a.get("n") and b.get("n"):
                row[kind] = {
                    "p50": round(a["p50_ms"] / b["p50_ms"], 2),
                    "p95": round(a["p95_ms"] / b["p95_ms"], 2),
                }
        out[n] = row
    return out


AUTH_ON, AUTH_OFF = "stalwart", "stalwart-auth-off"


def auth_cost(levels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What sign-in being on costs an interaction: p50/p95 of ``stalwart`` (signed in) and
    ``stalwart-auth-off`` (STALWART_AUTH_MODE=off, same app) per N, measured in the same run."""
    out: dict[str, Any] = {}
    for n, by_app in levels.items():
        on, off = by_app.get(AUTH_ON, {}), by_app.get(AUTH_OFF, {})
        if not on.get("all", {}).get("n") or not off.get("all", {}).get("n"):
            continue
        row = {}
        for kind in (*KINDS, "all"):
            a = on["all"] if kind == "all" else on.get("kinds", {}).get(kind, {})
            b = off["all"] if kind == "all" else off.get("kinds", {}).get(kind, {})
            if a.get("n") and b.get("n"):
                row[kind] = {q: {"on": a[f"{q}_ms"], "off": b[f"{q}_ms"]} for q in ("p50", "p95")}
        out[n] = row
    return out


def auth_cost_line(doc: dict[str, Any], n: int = TARGET_N) -> str:
    """One line: per interaction kind, p50 / p95 with sign-in on vs off at ``n``."""
    row = doc.get("auth_cost", {}).get(str(n))
    if not row:
        return f"Sign-in cost at N={n}: not measured (needs apps {AUTH_ON} and {AUTH_OFF})."
    parts = []
    for kind, q in row.items():
        d50 = q["p50"]["on"] - q["p50"]["off"]
        d95 = q["p95"]["on"] - q["p95"]["off"]
        parts.append(
            f"{kind} p50 {q['p50']['on']:.1f} vs {q['p50']['off']:.1f} ({d50:+.1f}), "
            f"p95 {q['p95']['on']:.1f} vs {q['p95']['off']:.1f} ({d95:+.1f})"
        )
    return (
        f"Sign-in cost per interaction at N={n} (ms, auth local vs off, same run, "
        f"{AUTH_ON} vs {AUTH_OFF}): " + "; ".join(parts) + "."
    )


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for the page: p95 at N=10 and the ratio to plain Streamlit."""
    level = doc["levels"].get(str(TARGET_N), {})
    found: list[dict[str, Any]] = []
    p95 = level.get("stalwart", {}).get("all", {}).get("p95_ms")
    found.append(
        {
            "target": f"interaction p95 <= {TARGET_P95_MS:g} ms at N = {TARGET_N} (Stalwart, all)",
            "value": f"{p95} ms" if p95 is not None else "not measured",
            "met": None if p95 is None else p95 <= TARGET_P95_MS,
        }
    )
    row = doc["ratios"].get(f"stalwart/{BASELINE}", {}).get(str(TARGET_N), {})
    worst = max(
        ((r[q], f"{kind} {q}") for kind, r in row.items() for q in ("p50", "p95")),
        default=None,
    )
    found.append(
        {
            "target": f"Stalwart / {BASELINE} <= {TARGET_RATIO} at N = {TARGET_N} "
            "(worst of p50 and p95 over the shared interactions)",
            "value": f"{worst[0]} ({worst[1]})" if worst else "not measured",
            "met": None if worst is None else worst[0] <= TARGET_RATIO,
        }
    )
    errors = sum(a.get("errors", 0) for level in doc["levels"].values() for a in level.values())
    measured = bool(doc["levels"])
    found.append(
        {
            "target": "no errors at any N",
            "value": str(errors) if measured else "not measured",
            "met": errors == 0 if measured else None,
        }
    )
    return found


def run(
    doc: dict[str, Any],
    *,
    quick: bool,
    apps: list[str],
    levels: list[int],
    seconds: float | None = None,
    seed: int = 1,
    profile: int | None = None,
    auth: str = "local",
) -> None:
    """Every level for every app into ``doc`` (levels outermost, so that drifting background
    load hits each app alike); all servers run for the whole measurement and are stopped
    after. ``doc`` keeps what was measured if the run is stopped half-way.

    ``profile=N``: then one more level of N sessions on Stalwart with py-spy attached (apart,
    so that the profiler's cost is in none of the numbers above).

    ``auth``: ``local`` (as shipped: Stalwart's users sign in, ``stalwart-auth-off`` is the
    same app without sign-in, for the cost line) or ``off`` (every Stalwart server without)."""
    prepare_like_the_app()
    level_s = seconds or (6.0 if quick else 25.0)
    servers = with_auth([s for s in SERVERS if s.name in apps], auth)
    doc.update(
        {
            "settings": {
                "levels": levels,
                "seconds_per_level": level_s,
                "think_s": THINK_S,
                "key_gap_s": KEY_GAP_S,
                "burst": BURST,
                "actions": ACTIONS,
                "interaction_timeout_s": INTERACTION_TIMEOUT_S,
                "seed": seed,
                "auth": auth,
            },
            "apps": {s.name: s.description for s in servers},
            "levels": {},
            "server_logs": {},
        }
    )
    with tempfile.TemporaryDirectory(prefix="stalwart-load-") as tmp:
        try:
            for server in servers:
                print(f"== starting {server.name}", file=sys.stderr, flush=True)
                server.start(Path(tmp) / server.name)
            for n in levels:
                for server in servers:
                    print(f"== N={n} {server.name}", file=sys.stderr, flush=True)
                    try:
                        result = asyncio.run(run_level(server, n, level_s, seed))
                    except ws_driver.SignInPageError as err:
                        # Not the app: every number would be the sign-in page's. Stop loudly.
                        print(f"FATAL {server.name}: {err}", file=sys.stderr, flush=True)
                        raise
                    except Exception as err:
                        result = {"error": f"{type(err).__name__}: {err}", "errors": 1}
                    if server.process is not None and server.process.poll() is not None:
                        result["server_exited"] = server.log_tail(30)
                    doc["levels"].setdefault(str(n), {})[server.name] = result
                    print(_progress(result), file=sys.stderr, flush=True)
            stalwart = [s for s in servers if s.name == "stalwart"]
            if profile and stalwart:
                print(f"== N={profile} stalwart under py-spy", file=sys.stderr, flush=True)
                doc["profile"] = profile_level(stalwart[0], profile, level_s, seed)
        finally:
            for server in servers:
                server.stop()
                doc["server_logs"][server.name] = log_problems(server)
            names = [s.name for s in servers]
            doc["ratios"] = {
                f"stalwart/{base}": ratios(doc["levels"], "stalwart", base)
                for base in names
                if base != "stalwart" and "stalwart" in names
            }
            doc["auth_cost"] = auth_cost(doc["levels"])
            doc["targets"] = targets(doc)


def log_problems(server: Server) -> dict[str, Any]:
    """Tracebacks and error lines in a server's output (WARNING level and up is logged)."""
    if server.workdir is None or not (server.workdir / "server.log").exists():
        return {"lines": 0}
    lines = (server.workdir / "server.log").read_text(errors="replace").splitlines()
    bad = [line for line in lines if "Traceback" in line or "error" in line.lower()]
    return {"lines": len(lines), "error_lines": len(bad), "first_errors": bad[:5]}


def profile_level(server: Server, n: int, seconds: float, seed: int) -> dict[str, Any]:
    """One level of ``n`` sessions with py-spy sampling which of the server's threads holds
    the GIL, and in what code: where the server's CPU goes."""
    assert server.process is not None
    raw = RESULTS / "tmp" / f"py-spy-{server.name}-N{n}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(
        run_level(server, n, seconds, seed, timed=py_spy(server.process.pid, seconds, raw))
    )
    level = {k: result.get(k) for k in ("sessions", "interactions_per_s", "all", "errors")}
    return {"level_with_profiler": level, "raw": str(raw), **profile_summary(raw)}


@contextlib.contextmanager
def py_spy(pid: int, seconds: float, out: Path) -> Iterator[None]:
    """``py-spy record --gil`` on ``pid`` (non-blocking, raw stacks to ``out``) while the
    body runs; an empty ``out`` if py-spy is not installed (``uv pip install py-spy``)."""
    out.unlink(missing_ok=True)
    if not PY_SPY.exists():
        yield
        return
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    command += ["--rate", "100", "--gil", "--threads", "--nonblocking", "--format", "raw"]
    proc = subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        try:
            proc.wait(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (short path)``: a function, whatever line was running."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def profile_summary(raw: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's raw stacks: the GIL share per kind of thread, the functions whose time
    (inclusive) is largest in Stalwart's code and overall, and the hottest leaf functions."""
    if not raw.exists() or not raw.stat().st_size:
        return {"error": f"no profile: is py-spy installed at {PY_SPY}? (uv pip install py-spy)"}
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for row in raw.read_text().splitlines():
        stack, _, count_text = row.rpartition(" ")
        frames = stack.split(";")
        count = int(count_text)
        name = frames[0].partition(": ")[2] or frames[0]
        kind = (
            "script runs"
            if "ScriptRunner" in name or "scriptThread" in name
            else "event loop (MainThread)" if name == "MainThread" else "other threads"
        )
        threads[kind] += count
        functions = [_function(f) for f in frames[1:]]
        for function in set(functions):
            inclusive[function] += count
        if functions:
            leaf[functions[-1]] += count
    total = sum(threads.values())

    def share(counter: Counter[str], keep: Callable[[str], bool] = bool) -> list[str]:
        picked = [(f, c) for f, c in counter.most_common() if keep(f)][:top]
        return [f"{100 * c / total:.1f}% {f}" for f, c in picked]

    return {
        "samples_gil_held": total,
        "threads_pct": {k: round(100 * v / total, 1) for k, v in threads.most_common()},
        "top_inclusive_stalwart": share(inclusive, lambda f: "(stalwart/" in f),
        "top_inclusive": share(inclusive),
        "top_self": share(leaf),
    }


def _progress(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"   error: {result['error']}"
    return (
        f"   {result['interactions_per_s']}/s, all p50/p95/p99 {ms_cell(result['all'])} ms, "
        f"errors {result['errors']}, server CPU {result['server_cpu_pct']}%, "
        f"driver CPU {result['driver_cpu_pct']}%"
    )


def report(doc: dict[str, Any]) -> str:
    """The load results as markdown: one row per N and app, then the ratios."""
    s = doc["settings"]
    lines = [
        f"## Concurrent sessions on the form page ({s['seconds_per_level']:g} s per N and app)",
        "",
        "ms p50 / p95 / p99 from `rerun_script` sent to `script_finished`; think "
        f"{s['think_s'][0]}-{s['think_s'][1]} s between actions.",
        "",
        "| N | app | interactions/s | keystroke | text commit | select | page switch | all "
        "| errors | CPU server / driver |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, by_app in doc["levels"].items():
        for app, r in by_app.items():
            if "error" in r:
                lines.append(f"| {n} | {app} | error: {r['error']} |")
                continue
            kinds = r["kinds"]
            cells = " | ".join(ms_cell(kinds.get(k)) for k in KINDS)
            lines.append(
                f"| {n} | {app} | {r['interactions_per_s']} | {cells} | {ms_cell(r['all'])} "
                f"| {r['errors']} | {r['server_cpu_pct']}% / {r['driver_cpu_pct']}% |"
            )
    for name, by_n in doc.get("ratios", {}).items():
        lines += [
            "",
            f"Ratio {name} (p50 / p95; plain Streamlit sends no keystrokes):",
            "",
            "| N | " + " | ".join(SHARED) + " |",
            "| --- |" + " --- |" * len(SHARED),
        ]
        for n, row in by_n.items():
            pairs = [
                f"{row[k]['p50']:.2f} / {row[k]['p95']:.2f}" if k in row else "—" for k in SHARED
            ]
            lines.append(f"| {n} | " + " | ".join(pairs) + " |")
    connects = [
        f"{app} N={n}: {ms_cell(r.get('connect'))}"
        for n, by_app in doc["levels"].items()
        for app, r in by_app.items()
        if n == str(max(int(k) for k in doc["levels"]))
    ]
    lines += ["", "Connect (page load + first run, ms p50 / p95 / p99): " + "; ".join(connects)]
    sign_ins = [
        f"{app} N={n}: {ms_cell(r.get('sign_in'))}"
        for n, by_app in doc["levels"].items()
        for app, r in by_app.items()
        if r.get("sign_in", {}).get("n") and n == str(max(int(k) for k in doc["levels"]))
    ]
    if sign_ins:
        lines += [
            "",
            "Sign-in (POST /auth/login, cheap argon2 settings; apart from connect, ms p50 / p95 "
            "/ p99): " + "; ".join(sign_ins),
        ]
    lines += ["", auth_cost_line(doc)]
    logs = {k: v for k, v in doc.get("server_logs", {}).items() if v.get("error_lines")}
    for app, log in logs.items():
        lines += ["", f"{app}'s log has {log['error_lines']} error lines, first: "]
        lines += [f"    {line}" for line in log["first_errors"]]
    prof = doc.get("profile")
    if prof:
        n = prof["level_with_profiler"]["sessions"]
        lines += ["", f"### Where Stalwart's server time goes (py-spy --gil, N={n})", ""]
        if "error" in prof:
            lines.append(prof["error"])
        else:
            lines.append(
                f"{prof['samples_gil_held']} samples with the GIL held; by thread: "
                + ", ".join(f"{k} {v}%" for k, v in prof["threads_pct"].items())
                + f". Raw stacks: `{prof['raw']}`."
            )
            for title, key in (
                ("Stalwart's functions, inclusive", "top_inclusive_stalwart"),
                ("hottest leaf functions", "top_self"),
            ):
                lines += ["", f"{title}:", "", *(f"- {x}" for x in prof[key][:10])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the levels; print markdown; write results/load.json and load.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 s per level, for a smoke run")
    parser.add_argument("--apps", default=",".join(APPS), help="comma-separated subset")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="numbers of sessions")
    parser.add_argument("--seconds", type=float, help="timed seconds per level and app")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="after the levels, N sessions on Stalwart once more under py-spy (installed with "
        "`uv pip install py-spy`), and where its server time goes",
    )
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="local",
        help="Stalwart's sign-in: local (as shipped; users sign in, and stalwart-auth-off is "
        "measured beside it for the cost of sign-in) or off (no Stalwart server signs in)",
    )
    parser.add_argument("--time-limit", type=float, default=900.0, help="watchdog, seconds")
    parser.add_argument("--out", type=Path, help="JSON path (the markdown goes beside it)")
    args = parser.parse_args(argv)
    return run_part(
        "load",
        lambda results: run(
            results,
            quick=args.quick,
            apps=[a for a in args.apps.split(",") if a in APPS],
            levels=[int(n) for n in args.levels.split(",")],
            seconds=args.seconds,
            seed=args.seed,
            profile=args.profile,
            auth=args.auth,
        ),
        report,
        quick=args.quick,
        time_limit=args.time_limit,
        out=args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
