"""Background jobs: enqueue-to-start latency and throughput per engine, and whether the page
stays interactive while CPU-heavy jobs run.

    uv run python bench/jobs_bench.py            # about two to three minutes
    uv run python bench/jobs_bench.py --quick    # fewer jobs and iterations, for a smoke run

Part 1, for each engine: embedded (worker threads in this process, as in the app) on SQLite,
embedded on PostgreSQL, and RQ on Redis (``app jobs worker --engine rq`` processes, the table
on PostgreSQL):

- **enqueue to start**: one no-op job (``bench/jobs_noop.py``) at a time on idle workers; ms
  from ``enqueue()`` returning to the job function's first line (the job returns its
  ``time.time()``), and to the claim (``started_at`` in the table);
- **throughput**: N no-op jobs enqueued back to back from one thread while the workers run
  them; jobs/s from the first enqueue to the last ``finished_at``.

Part 2: ``app run`` (embedded engine, ``STALWART_JOBS_WORKERS=4``): the websocket round trip of
a select change on the form page and of a page switch (``bench/ws_driver.py``), idle, then
again while 4 CPU-heavy ``portfolio_risk`` jobs (enqueued into the app's database with
``JobQueue``) run in the app process, with the ratio.

Prints a markdown table and writes ``bench/results/jobs_latest.json``. Talks only to
127.0.0.1: PostgreSQL at ``STALWART_BENCH_PG_URL`` (a scratch database, dropped afterwards),
Redis at ``STALWART_BENCH_REDIS_URL`` (database 12, a queue of its own whose keys are deleted
afterwards). Every phase has a time budget, a watchdog ends the whole run, and every process
it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# bench/ is sys.path[0] when this runs as a script; the repository root was added above.
import ws_driver  # noqa: E402
from bench.jobs_noop import noop  # noqa: E402
from benchlib import cpu_seconds, scratch_postgres  # noqa: E402
from rq import Worker  # noqa: E402
from run_bench import STALWART, Server, app_run, machine  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.jobs_harness import clean_rq_keys  # noqa: E402
from ws_driver import summarise  # noqa: E402

from stalwart.core.compute.schemas import PortfolioRiskParams  # noqa: E402
from stalwart.core.config import load_config  # noqa: E402
from stalwart.core.database import DB  # noqa: E402
from stalwart.core.job_engines import EmbeddedEngine, RQDispatcher  # noqa: E402
from stalwart.core.jobs import FINISHED, Job, JobQueue, JobResult, JobSettings  # noqa: E402
from stalwart.core.logs import configure_logging  # noqa: E402
from stalwart.core.migrations import migrate  # noqa: E402
from stalwart.models import JobRecord  # noqa: E402
from stalwart.services.compute_jobs import portfolio_risk  # noqa: E402

REDIS_URL = os.environ.get("STALWART_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
WORKERS = 2  # per engine in part 1: the app's default STALWART_JOBS_WORKERS, and 2 cores here
APP_JOBS = 4  # CPU-heavy jobs (and embedded workers) in part 2
PROCESS_START_S = 90.0
PROCESS_STOP_S = 10.0
FINISHED_VALUES = [s.value for s in FINISHED]


class BenchTimeout(BaseException):
    """The watchdog fired (or we were told to stop): unwind, stopping what was started."""


# --- processes and services ----------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without Stalwart/Streamlit settings, able to import src/ and bench/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STALWART_", "STREAMLIT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env.update(extra)
    return env


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in a process group of its own (so that its children stop with it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (an RQ worker and its work horse), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=PROCESS_STOP_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PROCESS_STOP_S)


def tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, for an error message."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- engines -------------------------------------------------------------------------------


def open_db(database_url: str, data_dir: Path) -> DB:
    """The database (migrated) as the app would open it."""
    db = DB.from_config(load_config(database_url=database_url, data_dir=data_dir))
    migrate(db)
    return db


@contextlib.contextmanager
def embedded(database_url: str, tmp: Path) -> Iterator[JobQueue]:
    """The embedded engine in this process, as the app runs it: enqueue wakes its workers."""
    db = open_db(database_url, tmp / "data")
    engine = EmbeddedEngine(db, JobSettings(), workers=WORKERS)
    engine.start()
    try:
        yield JobQueue(db, engine)
    finally:
        engine.stop(wait_s=5)
        db.dispose()


@contextlib.contextmanager
def rq_engine(database_url: str, tmp: Path) -> Iterator[JobQueue]:
    """RQ on Redis: ``app jobs worker --engine rq`` processes; this process enqueues."""
    queue_name = f"stalwart-bench-{uuid.uuid4().hex[:10]}"
    db = open_db(database_url, tmp / "data")
    dispatcher = RQDispatcher(REDIS_URL, queue_name, JobSettings())
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / f"rq-worker-{i}.log" for i in range(WORKERS)]
    try:
        dispatcher.check()
        env = child_env(
            STALWART_DATABASE_URL=database_url,
            STALWART_DATA_DIR=str(tmp / "data"),
            STALWART_JOBS_ENGINE="rq",
            STALWART_JOBS_QUEUE=queue_name,
            STALWART_REDIS_URL=REDIS_URL,
            STALWART_LOG_LEVEL="WARNING",
        )
        command = [sys.executable, "-m", "stalwart.cli.main", "jobs", "worker", "--engine", "rq"]
        procs = [start_process(command, env, log) for log in logs]
        deadline = time.monotonic() + PROCESS_START_S
        while Worker.count(queue=dispatcher.queue) < WORKERS:
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"an rq worker exited: {tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rq workers not ready in {PROCESS_START_S:g} s")
            time.sleep(0.1)
        yield JobQueue(db, dispatcher)
    finally:
        for proc in procs:
            stop_process(proc)
        with contextlib.suppress(Exception):
            clean_rq_keys(dispatcher.redis, queue_name)
        dispatcher.redis.close()
        db.dispose()


@contextlib.contextmanager
def on_postgres(
    setup: Callable[[str, Path], contextlib.AbstractContextManager[JobQueue]], tmp: Path
) -> Iterator[JobQueue]:
    """``setup`` on a scratch PostgreSQL database."""
    with scratch_postgres("stalwart_jobs_bench") as url, setup(url, tmp) as queue:
        yield queue


ENGINES: dict[str, tuple[str, str, Callable[[Path], contextlib.AbstractContextManager[JobQueue]]]]
ENGINES = {
    "embedded-sqlite": (
        "embedded on SQLite",
        f"{WORKERS} threads in the enqueuing process",
        lambda tmp: embedded("", tmp),
    ),
    "embedded-postgresql": (
        "embedded on PostgreSQL",
        f"{WORKERS} threads in the enqueuing process",
        lambda tmp: on_postgres(embedded, tmp),
    ),
    "rq-redis": (
        "RQ on Redis (table on PostgreSQL)",
        f"{WORKERS} `app jobs worker --engine rq` processes (a forked work horse per job)",
        lambda tmp: on_postgres(rq_engine, tmp),
    ),
}


# --- part 1: latency and throughput --------------------------------------------------------


def epoch(moment: dt.datetime | None) -> float:
    """A timezone-aware datetime from the table as time.time() seconds."""
    if moment is None:
        raise ValueError("the job has no timestamp")
    return moment.timestamp()


def wait_finished(queue: JobQueue, job_id: str, deadline: float) -> JobResult:
    """Poll the table until the job has ended (every 5 ms: the timing is in the job's row)."""
    while True:
        job = queue.poll(job_id)
        if job.finished:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status.value} at the phase's deadline")
        time.sleep(0.005)


def measure_latency(queue: JobQueue, n: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """One no-op job at a time on idle workers: enqueue() returning -> first line / claim."""
    deadline = time.monotonic() + budget_s
    first_line: list[float] = []
    claimed: list[float] = []
    call: list[float] = []
    for i in range(warmup + n):
        if time.monotonic() > deadline:
            break
        before = time.time()
        job_id = queue.enqueue(Job.of(noop, owner="bench-latency"))
        returned = time.time()
        job = wait_finished(queue, job_id, deadline + 10)
        if job.status.value != "succeeded":
            raise RuntimeError(f"no-op job {job_id} ended {job.status.value}: {job.error}")
        if i >= warmup:
            first_line.append((job.result["t"] - returned) * 1000)
            claimed.append((epoch(job.started_at) - returned) * 1000)
            call.append((returned - before) * 1000)
        time.sleep(0.02)  # let the worker go back to waiting
    return {
        "to_first_line": summarise(first_line).as_dict(),
        "to_claim": summarise(claimed).as_dict(),
        "enqueue_call": summarise(call).as_dict(),
    }


def finished_count(db: DB, owner: str) -> int:
    """How many of ``owner``'s jobs have ended."""
    query = (
        select(func.count())
        .select_from(JobRecord)
        .where(JobRecord.owner == owner, JobRecord.status.in_(FINISHED_VALUES))
    )
    with db.unit_of_work(read_only=True) as uow:
        return int(uow.session.execute(query).scalar_one())


def measure_throughput(queue: JobQueue, n: int, budget_s: float) -> dict[str, Any]:
    """``n`` no-op jobs enqueued back to back while the workers drain them."""
    owner = f"bench-burst-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + budget_s
    started = time.time()
    enqueued = 0
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        queue.enqueue(Job.of(noop, owner=owner))
        enqueued += 1
    enqueue_s = time.time() - started
    while finished_count(queue.db, owner) < enqueued and time.monotonic() < deadline:
        time.sleep(0.05)
    query = select(JobRecord.status, JobRecord.finished_at, JobRecord.queued_at, JobRecord.result)
    with queue.db.unit_of_work(read_only=True) as uow:
        rows = uow.session.execute(query.where(JobRecord.owner == owner)).all()
    done = [r for r in rows if r.status == "succeeded"]
    last = max((epoch(r.finished_at) for r in done), default=time.time())
    waits = [(r.result["t"] - epoch(r.queued_at)) * 1000 for r in done]
    return {
        "jobs": enqueued,
        "succeeded": len(done),
        "complete": len(done) == n,
        "seconds": round(last - started, 3),
        "jobs_per_s": round(len(done) / (last - started), 1) if done else 0.0,
        "enqueue_per_s": round(enqueued / enqueue_s, 1) if enqueue_s else 0.0,
        # queued_at (written in enqueue's transaction) -> first line, in the burst: queueing
        "queued_to_first_line_in_burst": summarise(waits).as_dict() if waits else None,
    }


# --- part 2: the page while CPU-heavy jobs run ---------------------------------------------


def interaction(server: Server, n: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """Websocket round trips of a select change (form page) and a page switch."""
    scenarios: dict[str, tuple[Callable[[], ws_driver.Scenario], str]] = {
        "select": (ws_driver.select_change, STALWART.form_query),
        "page switch": (STALWART.ws_page_switch, ""),
    }
    results: dict[str, Any] = {}
    for name, (make, query) in scenarios.items():
        try:
            samples = asyncio.run(
                ws_driver.measure(
                    server.url,
                    make,
                    iterations=n,
                    warmup=warmup,
                    query_string=query,
                    budget_s=budget_s,
                    credentials=server.credentials,  # signed in, as run_bench's servers
                )
            )
            results[name] = summarise(samples).as_dict()
        except Exception as err:
            results[name] = {"error": f"{type(err).__name__}: {err}"}
    return results


PY_SPY = Path(sys.executable).parent / "py-spy"


@contextlib.contextmanager
def gil_profile(pid: int, seconds: float, out: Path) -> Iterator[dict[str, Any]]:
    """While the body runs, sample which thread of ``pid`` holds the GIL (py-spy ``--gil``,
    non-blocking); then summarise the samples by kind of thread into the yielded dict."""
    summary: dict[str, Any] = {}
    if not PY_SPY.exists():
        summary["error"] = f"{PY_SPY} not found (uv pip install py-spy)"
        yield summary
        return
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", "100", "--gil", "--threads", "--nonblocking", "--format", "raw"]
    proc = subprocess.Popen(
        [*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield summary
    finally:
        try:
            proc.wait(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    kinds: dict[str, int] = {}
    lines: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for row in out.read_text().splitlines():
            stack, _, count = row.rpartition(" ")
            frames = stack.split(";")
            thread = frames[0].partition(": ")[2] or frames[0]
            kind = (
                "job threads"
                if thread.startswith("stalwart-job-")
                else (
                    "script runs"
                    if "scriptThread" in thread
                    else "event loop (MainThread)" if thread == "MainThread" else "other threads"
                )
            )
            kinds[kind] = kinds.get(kind, 0) + int(count)
            if kind == "job threads":
                lines[frames[-1]] = lines.get(frames[-1], 0) + int(count)
    total = sum(kinds.values())
    if total:
        summary["gil_held_share_pct"] = {
            k: round(100 * v / total, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        }
        summary["samples"] = total
        summary["job_threads_top_lines"] = sorted(lines, key=lambda k: -lines[k])[:5]
    else:
        summary["error"] = "py-spy recorded nothing"


def app_server(workers: int) -> Server:
    """`app run` on SQLite with ``workers`` embedded job workers."""
    where = f"{workers} embedded workers" if workers else "no job workers"
    return Server(
        f"stalwart-jobs-{workers}",
        f"Stalwart (`app run`, {where})",
        STALWART,
        app_run,
        "/healthz",
        env={"STALWART_JOBS_WORKERS": str(workers)},
        browser=False,
    )


def heavy_jobs(db: DB, paths: int) -> list[str]:
    """Enqueue APP_JOBS CPU-heavy jobs and wait until they all run; returns their ids."""
    queue = JobQueue(db)  # the app's workers (or a worker process) poll the table
    ids = [
        queue.enqueue(
            Job.of(
                portfolio_risk,
                PortfolioRiskParams(paths=paths, seed=i),
                owner="bench",
                max_attempts=1,
            )
        )
        for i in range(APP_JOBS)
    ]
    deadline = time.monotonic() + 30
    while not all(queue.poll(i).status.value == "running" for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the jobs did not all start: {[queue.poll(i) for i in ids]}")
        time.sleep(0.1)
    time.sleep(1.0)  # past their first chunk
    return ids


def cancel_jobs(db: DB, ids: list[str]) -> None:
    """Cancel the jobs and wait (a little) until they have stopped."""
    queue = JobQueue(db)
    for job_id in ids:
        with contextlib.suppress(Exception):
            queue.cancel(job_id, user="bench")
    deadline = time.monotonic() + 15
    while ids and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if all(queue.poll(i).finished for i in ids):
                return
        time.sleep(0.2)


def under_load(
    server: Server,
    db: DB,
    ids: list[str],
    pids: dict[str, int],
    n: int,
    warmup: int,
    budget_s: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Interaction while the jobs run; how much CPU ``pids`` used and how far the jobs got
    (and, with ``profile``, which threads of the app held the GIL meanwhile)."""
    queue = JobQueue(db)

    def snapshot() -> tuple[float, dict[str, float], list[float]]:
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        cpu["whole machine"] = machine_busy_seconds()
        return time.monotonic(), cpu, [queue.poll(i).progress for i in ids]

    # First the jobs alone for a few seconds: the CPU they get with nobody clicking.
    t0, cpu0, p0 = snapshot()
    time.sleep(3.0)
    t1, cpu1, p1 = snapshot()
    gil: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if profile is not None:
            gil = stack.enter_context(gil_profile(pids["app"], 8, profile))
        result = interaction(server, n, warmup, budget_s)
    t2, cpu2, p2 = snapshot()
    statuses = [queue.poll(i).status.value for i in ids]

    ours = [cpu1[k] - cpu0[k] for k in pids]

    def rate(ta: float, tb: float, pa: list[float], pb: list[float]) -> float:
        return round(sum(b - a for a, b in zip(pa, pb, strict=True)) / (tb - ta), 2)

    return {
        "interaction": result,
        **({"gil_profile": gil} if profile is not None else {}),
        "jobs": {
            "loaded_phase_s": round(t2 - t1, 1),
            "still_running_after": all(s == "running" for s in statuses),
            "progress_after_pct": [round(p, 1) for p in p2],
            # CPU-seconds per second of each process, and the jobs' summed progress per second
            "cpu_cores_jobs_alone": {k: round((cpu1[k] - cpu0[k]) / (t1 - t0), 2) for k in cpu0},
            "cpu_cores_while_clicking": {
                k: round((cpu2[k] - cpu1[k]) / (t2 - t1), 2) for k in cpu0
            },
            # While the jobs ran alone this benchmark slept: the rest was someone else's.
            "cpu_cores_others_while_jobs_alone": round(
                max(0.0, cpu1["whole machine"] - cpu0["whole machine"] - sum(ours)) / (t1 - t0), 2
            ),
            "job_pct_per_s_alone": rate(t0, t1, p0, p1),
            "job_pct_per_s_while_clicking": rate(t1, t2, p1, p2),
        },
    }


def machine_busy_seconds() -> float:
    """CPU-seconds all of this machine's cores have spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure_app(
    tmp: Path,
    n: int,
    warmup: int,
    budget_s: float,
    paths: int,
    log: Callable[[str], None],
    profile: bool = False,
) -> dict[str, Any]:
    """Interaction idle, then with APP_JOBS CPU-heavy jobs in the app's own worker threads
    (the default), then, for comparison, with the same jobs in an `app jobs worker` process."""
    entry: dict[str, Any] = {"job_paths": paths}
    # 1. The default: the jobs run in threads of the app process.
    server, workdir = app_server(APP_JOBS), tmp / "app-threads"
    entry["description"] = server.description
    db: DB | None = None
    ids: list[str] = []
    try:
        server.start(workdir)
        assert server.process is not None
        log("app: idle")
        entry["idle"] = interaction(server, n, warmup, budget_s)
        db = DB.from_config(load_config(database_url="", data_dir=workdir / "data"))
        ids = heavy_jobs(db, paths)
        log(f"app: {APP_JOBS} jobs running in the app process")
        pids = {"app": server.process.pid}
        spy = tmp / "gil.txt" if profile else None
        entry["in_app"] = under_load(server, db, ids, pids, n, warmup, budget_s, spy)
    finally:
        if db is not None:
            cancel_jobs(db, ids)
            db.dispose()
        server.stop()
    # 2. The alternative: no workers in the app, the jobs in an `app jobs worker` process.
    server, workdir = app_server(0), tmp / "app-process"
    db, ids, worker = None, [], None
    try:
        server.start(workdir)
        assert server.process is not None
        command = [sys.executable, "-m", "stalwart.cli.main", "jobs", "worker"]
        command += ["--engine", "embedded", "--concurrency", str(APP_JOBS)]
        env = child_env(STALWART_DATA_DIR=str(workdir / "data"), STALWART_LOG_LEVEL="WARNING")
        worker = start_process(command, env, workdir / "worker.log")
        db = DB.from_config(load_config(database_url="", data_dir=workdir / "data"))
        log("app: idle (no job workers in it)")
        entry["idle_no_workers"] = interaction(server, n, warmup, budget_s)
        ids = heavy_jobs(db, paths)
        log(f"app: {APP_JOBS} jobs running in an `app jobs worker` process")
        pids = {"app": server.process.pid, "worker": worker.pid}
        entry["in_worker"] = under_load(server, db, ids, pids, n, warmup, budget_s)
    finally:
        if db is not None:
            cancel_jobs(db, ids)
            db.dispose()
        if worker is not None:
            stop_process(worker)
        server.stop()
    return entry


# --- report --------------------------------------------------------------------------------


def cell(summary: dict[str, Any] | None) -> str:
    """``p50 / p95 / max`` ms of a summary, or why there is none."""
    if not summary:
        return "—"
    if "p50_ms" not in summary:
        return "error"
    return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f} / {summary['max_ms']:.1f}"


def times(loaded: dict[str, Any] | None, idle: dict[str, Any] | None, key: str) -> str:
    """How many times slower ``loaded`` is than ``idle`` at ``key``."""
    if not loaded or not idle or key not in loaded or key not in idle or not idle[key]:
        return "—"
    return f"{loaded[key] / idle[key]:.1f}x"


def report(doc: dict[str, Any]) -> str:
    """The results as markdown."""
    m, s = doc["machine"], doc["settings"]
    lines = [
        f"# Background jobs, {doc.get('finished_at', '?')}",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}; Python {m['python']}, Streamlit "
        f"{m['streamlit']}.",
        "",
        f"## Enqueue to start (no-op job, one at a time on idle workers; ms p50 / p95 / max; "
        f"n={s['latency_n']}) and throughput ({s['burst_n']} no-op jobs enqueued back to back)",
        "",
        "| engine | workers | enqueue() -> first line | enqueue() -> claim | enqueue() call "
        "| throughput (jobs/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in doc["engines"].values():
        lat, thr = entry.get("latency", {}), entry.get("throughput", {})
        rate = "error"
        if thr:
            rate = f"{thr['jobs_per_s']:.1f}"
            if not thr["complete"]:
                rate += f" ({thr['succeeded']}/{thr['jobs']} done in the budget)"
        lines.append(
            f"| {entry['description']} | {entry['workers']} | {cell(lat.get('to_first_line'))} "
            f"| {cell(lat.get('to_claim'))} | {cell(lat.get('enqueue_call'))} | {rate} |"
        )
    app = doc.get("app", {})
    lines += [
        "",
        f"## The page while {APP_JOBS} CPU-heavy portfolio_risk jobs run (`app run` on SQLite; "
        f"websocket round trip, ms p50 / p95 / max, and the ratio to idle; n={s['ws_n']})",
        "",
        "| the app | select change | page switch |",
        "| --- | --- | --- |",
    ]
    rows = [
        (f"idle ({APP_JOBS} embedded workers, no jobs)", app.get("idle"), None),
        (
            f"{APP_JOBS} jobs in the app's own worker threads (the embedded default)",
            app.get("in_app", {}).get("interaction"),
            app.get("idle"),
        ),
        ("idle (no job workers in the app)", app.get("idle_no_workers"), None),
        (
            f"{APP_JOBS} jobs in an `app jobs worker` process "
            "(`STALWART_JOBS_WORKERS=0` in the app)",
            app.get("in_worker", {}).get("interaction"),
            app.get("idle_no_workers"),
        ),
    ]
    for label, got, base in rows:
        cells = []
        for name in ("select", "page switch"):
            text = cell((got or {}).get(name))
            if base is not None and text not in ("—", "error"):
                a, b = (base or {}).get(name), (got or {}).get(name)
                text += f" ({times(b, a, 'p50_ms')} / {times(b, a, 'p95_ms')})"
            cells.append(text)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += ["", "Notes:", ""]
    lines.append(
        f"- This machine has {m['nproc']} CPU cores. The embedded engine runs jobs in threads of "
        "the app process, so the jobs share its cores and its GIL with Streamlit's event loop "
        "and script runs (numpy releases the GIL in its array work; the Python between the "
        "array calls, and the job's progress writes, need it)."
    )
    for key, where in (("in_app", "in the app's threads"), ("in_worker", "in a worker process")):
        jobs = app.get(key, {}).get("jobs")
        if not jobs:
            continue
        lines.append(
            f"- Jobs {where}: CPU cores busy (CPU-seconds per second; the whole machine includes "
            "this benchmark's client and anything else running) with the jobs alone "
            f"{jobs['cpu_cores_jobs_alone']}, while clicking {jobs['cpu_cores_while_clicking']}; "
            f"the jobs' summed progress {jobs['job_pct_per_s_alone']} %/s alone, "
            f"{jobs['job_pct_per_s_while_clicking']} %/s while clicking; "
            + (
                f"all still running after the {jobs['loaded_phase_s']} s measurement."
                if jobs["still_running_after"]
                else "NOT all still running at its end (size them up: --job-paths)."
            )
        )
    others = [
        app.get(key, {}).get("jobs", {}).get("cpu_cores_others_while_jobs_alone", 0.0)
        for key in ("in_app", "in_worker")
    ]
    if max(others) > 0.2:
        lines.append(
            f"- WARNING: other processes on this machine used {others} CPU cores while the jobs "
            "ran (measured while this benchmark slept): the numbers of part 2 are disturbed."
        )
    gil = app.get("in_app", {}).get("gil_profile")
    if gil and "gil_held_share_pct" in gil:
        lines.append(
            f"- py-spy, jobs in the app's threads, while clicking: of the {gil['samples']} "
            f"samples in which a thread held the GIL: {gil['gil_held_share_pct']} (%); the job "
            f"threads held it most at {gil['job_threads_top_lines'][:3]}."
        )
    elif gil:
        lines.append(f"- py-spy: {gil.get('error')}")
    lines += [f"- {note}" for note in doc.get("notes", [])]
    errors = [
        f"- {name}: {entry['error']}" for name, entry in doc["engines"].items() if "error" in entry
    ]
    if "error" in app:
        errors.append(f"- app: {app['error']}")
    if "aborted" in doc:
        errors.append(f"- aborted: {doc['aborted']}")
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Both parts; print markdown, write results/jobs_latest.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few jobs and iterations")
    parser.add_argument(
        "--engines", help="comma-separated subset of: " + ", ".join(ENGINES) + " (or none)"
    )
    parser.add_argument("--no-app", action="store_true", help="skip part 2 (the page)")
    parser.add_argument(
        "--job-paths",
        type=int,
        default=5_000_000,
        help="Monte-Carlo paths per CPU-heavy job: enough to outlast the loaded measurement",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample which threads hold the app's GIL while it runs the jobs (needs py-spy; "
        "the sampling costs the app a little)",
    )
    parser.add_argument("--time-limit", type=float, default=230.0, help="watchdog, seconds")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "jobs_latest.json")
    args = parser.parse_args(argv)
    latency_n, warmup, burst_n, ws_n, ws_warmup = (
        (20, 3, 100, 30, 5) if args.quick else (100, 10, 500, 100, 10)
    )
    phase_s = 40.0  # latency phases and each interaction scenario
    burst_s = 75.0  # RQ drains about 13 no-op jobs/s here: 500 take about 40 s
    chosen = [e for e in (args.engines or ",".join(ENGINES)).split(",") if e in ENGINES]

    def on_signal(signum: int, _frame: Any) -> None:
        raise BenchTimeout(f"{signal.Signals(signum).name} after {args.time_limit:g} s limit")

    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    configure_logging("WARNING", json=False, stream=sys.stderr)

    def log(message: str) -> None:
        print(f"== {message}", file=sys.stderr, flush=True)

    doc: dict[str, Any] = {
        "machine": machine(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": os.getloadavg(),
        "settings": {
            "latency_n": latency_n,
            "latency_warmup": warmup,
            "burst_n": burst_n,
            "ws_n": ws_n,
            "ws_warmup": ws_warmup,
            "workers_per_engine": WORKERS,
            "job_settings": "defaults (heartbeat 2 s, poll interval 1 s)",
            "redis_url": REDIS_URL,
        },
        "engines": {},
        "notes": [
            "Embedded workers woken by enqueue() in their own process start a job at once; a "
            "separate `app jobs worker --engine embedded` finds jobs enqueued by another "
            "process at its next poll (STALWART_JOBS_POLL_INTERVAL_S, 1 s): not measured here.",
            "RQ runs each job in a freshly forked work horse, which opens its own database "
            "connection and imports the job's module: that is most of its start latency.",
        ],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="stalwart-jobs-bench-") as tmpdir:
            tmp = Path(tmpdir)
            for name in chosen:
                description, workers, setup = ENGINES[name]
                log(f"{name}: {description}")
                entry: dict[str, Any] = {"description": description, "workers": workers}
                doc["engines"][name] = entry
                (tmp / name).mkdir()
                try:
                    with setup(tmp / name) as queue:
                        entry["latency"] = measure_latency(queue, latency_n, warmup, phase_s)
                        entry["throughput"] = measure_throughput(queue, burst_n, burst_s)
                except Exception as err:
                    entry["error"] = f"{type(err).__name__}: {err}"
                    print(entry["error"], file=sys.stderr)
                print(json.dumps(entry), file=sys.stderr, flush=True)
            if not args.no_app:
                log(f"app with {APP_JOBS} CPU-heavy jobs")
                try:
                    doc["app"] = measure_app(
                        tmp, ws_n, ws_warmup, phase_s, args.job_paths, log, args.py_spy
                    )
                except Exception as err:
                    doc["app"] = {"error": f"{type(err).__name__}: {err}"}
                    print(doc["app"]["error"], file=sys.stderr)
                print(json.dumps(doc["app"]), file=sys.stderr, flush=True)
    except BenchTimeout as stop:
        doc["aborted"] = str(stop)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(report(doc))
    print(f"\n(written to {args.out})")
    return 1 if "aborted" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
