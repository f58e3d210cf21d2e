"""What the benchmark scripts share besides servers (``run_bench``) and percentiles
(``ws_driver.summarise``): the run's metadata, a watchdog, timing and writing the results.

Importing it puts the repository root and ``src/`` on ``sys.path``, as the scripts need.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT / "src"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from run_bench import machine  # noqa: E402
from ws_driver import summarise  # noqa: E402

RESULTS = BENCH / "results"
PG_ADMIN_URL = os.environ.get(
    "STALWART_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class BenchStop(BaseException):
    """The watchdog fired, or we were told to stop (Ctrl-C, SIGTERM): unwind, stopping every
    server and thread that was started on the way out."""


@contextlib.contextmanager
def watchdog(limit_s: float) -> Iterator[None]:
    """Raise ``BenchStop`` in the main thread after ``limit_s`` seconds, or on SIGINT/SIGTERM;
    further signals are ignored until the block is left, so that the clean-up (stopping
    servers, dropping databases) runs to its end."""

    def on_signal(signum: int, _frame: Any) -> None:
        # Once: a second Ctrl-C (or uv forwarding the first) must not cut the clean-up short.
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if signum == signal.SIGALRM:
            raise BenchStop(f"the time limit of {limit_s:g} s was reached")
        raise BenchStop(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGALRM, signal.SIGINT)}
    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_signal)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare_like_the_app() -> None:
    """Stalwart's logs at WARNING on stderr (stdout is the report), and ``gc.freeze()`` what
    this process has loaded, as the app does after start-up, so that a measurement is not
    charged for full collections that walk the benchmark's own imports (50 ms on this
    machine), which the app does not pay either."""
    from stalwart.core.logs import configure_logging
    from stalwart.web.server_tuning import freeze_startup_heap

    configure_logging("WARNING", json=False, stream=sys.stderr)
    freeze_startup_heap(())


def git_commit() -> str:
    """The checked-out commit, with ``+dirty`` if the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if head and dirty else head or "unknown"


def run_info() -> dict[str, Any]:
    """What the numbers were measured on, and when: machine, versions, commit, load."""
    return {
        **machine(),
        "git_commit": git_commit(),
        "started_at": now(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def now() -> str:
    """The current UTC time, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def timed_ms(fn: Callable[[], Any]) -> float:
    """How long one call of ``fn`` took, in milliseconds."""
    started = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - started) / 1e6


def stats(samples: list[float]) -> dict[str, Any]:
    """n, p50, p95, p99, max and mean of millisecond samples (or n=0 if there are none)."""
    return summarise(samples).as_dict() if samples else {"n": 0}


def ms_cell(result: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p95", "p99")) -> str:
    """``p50 / p95 / p99`` of a result in ms (the keys to show), or a dash."""
    if not result or not result.get("n"):
        return "—"
    return " / ".join(_number(result[f"{k}_ms"]) for k in keys)


def _number(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def mark(met: bool | None) -> str:
    """A target's verdict for the markdown table."""
    return "—" if met is None else ("met" if met else "**missed**")


def target_table(found: list[dict[str, Any]]) -> str:
    """Targets (``target``, ``value``, ``met``: True, False or None) as a markdown table."""
    rows = [f"| {t['target']} | {t['value']} | {mark(t['met'])} |" for t in found]
    return "\n".join(["| target | value | verdict |", "| --- | --- | --- |", *rows])


def default_out(name: str, quick: bool) -> Path:
    """``bench/results/<name>.json``; a quick run's under ``bench/results/tmp/`` (git ignores
    it), so that a smoke run does not replace the numbers of a full one."""
    return RESULTS / "tmp" / f"{name}-quick.json" if quick else RESULTS / f"{name}.json"


def write_results(doc: dict[str, Any], markdown: str, out: Path) -> None:
    """``out`` (JSON) and the markdown beside it (``.md``), creating the directory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (at ``STALWART_BENCH_PG_URL``), dropped afterwards; yields
    its URL."""
    import uuid

    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(
        make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_part(
    part: str,
    measure: Callable[[dict[str, Any]], None],
    report: Callable[[dict[str, Any]], str],
    *,
    quick: bool,
    time_limit: float,
    out: Path | None,
) -> int:
    """Run one benchmark part under the watchdog, print its report and write its results.

    ``measure(results)`` fills ``results`` (kept if the watchdog stops it half-way);
    ``report(results)`` is its markdown. Exit status 1 if the run was stopped.
    """
    out = out or default_out(part, quick)
    doc: dict[str, Any] = {"run": run_info(), part: {}}
    try:
        with watchdog(time_limit):
            measure(doc[part])
    except BenchStop as stop:
        doc["aborted"] = str(stop)
    doc["run"]["finished_at"] = now()
    markdown = report(doc[part]) + "\n\n" + target_table(doc[part].get("targets", []))
    if "aborted" in doc:
        markdown += f"\n\nAborted: {doc['aborted']}"
    write_results(doc, markdown, out)
    print(markdown)
    print(f"\n(written to {out} and {out.with_suffix('.md')})")
    return 1 if "aborted" in doc else 0


def part_main(
    part: str,
    description: str,
    measure: Callable[[dict[str, Any], bool], None],
    report: Callable[[dict[str, Any]], str],
    *,
    quick_help: str,
    argv: list[str] | None = None,
) -> int:
    """The command line of a part with only ``--quick``, ``--time-limit`` and ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--time-limit", type=float, default=180.0, help="watchdog, seconds")
    parser.add_argument("--out", type=Path, help="JSON path (the markdown goes beside it)")
    args = parser.parse_args(argv)
    return run_part(
        part,
        lambda results: measure(results, args.quick),
        report,
        quick=args.quick,
        time_limit=args.time_limit,
        out=args.out,
    )
