"""Shared fixtures: real SQLite files and real PostgreSQL databases, one per test.

Services that a test needs (PostgreSQL, Redis, Chromium, root for mounting) are looked up
once. When one is missing the test is skipped with the reason, unless the environment variable
``STALWART_REQUIRE`` names it (``.ci/run`` sets ``postgres,root``): then the absence fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, make_url, text

from stalwart.core.database import DB, RetryPolicy
from stalwart.core.migrations import migrate
from stalwart.core.rbac import DEFAULT_ROLES, Principal

PG_URL = os.environ.get("STALWART_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis database of its own (13), and queue names unique per test, removed afterwards.
REDIS_URL = os.environ.get("STALWART_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# Every log line of the run is checked to be a JSON object with every field (tests/log_check.py).
pytest_plugins = ["tests.log_check"]

REQUIRED = {s.strip() for s in os.environ.get("STALWART_REQUIRE", "").split(",") if s.strip()}
ROOT = Path(__file__).resolve().parent.parent

# Short waits so that retry tests run fast; the bound (attempts) is what they check.
FAST_RETRY = RetryPolicy(max_attempts=4, initial_s=0.01, max_s=0.05)


def need(service: str, problem: str | None) -> None:
    """Skip (or, if ``service`` is required, fail) when ``problem`` says it is unavailable."""
    if problem is None:
        return
    if service in REQUIRED:
        pytest.fail(f"required service {service!r} is unavailable: {problem}", pytrace=False)
    pytest.skip(f"{service} unavailable: {problem}")


@cache
def postgres_problem() -> str | None:
    """Why PostgreSQL at STALWART_TEST_PG_URL cannot be used, or None."""
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"cannot connect to {make_url(PG_URL).render_as_string()}: {exc}"
    return None


@cache
def redis_problem() -> str | None:
    """Why Redis at STALWART_TEST_REDIS_URL cannot be used, or None."""
    from redis import Redis

    try:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        return f"cannot connect to {REDIS_URL}: {exc}"
    return None


@cache
def promtool_problem() -> str | None:
    """Why Prometheus's ``promtool`` cannot be run (Debian: apt-get install prometheus), or None."""
    import shutil

    if shutil.which("promtool") is None:
        return "promtool is not on PATH (apt-get install --no-install-recommends prometheus)"
    return None


@cache
def mount_problem() -> str | None:
    """Why this process cannot mount a tmpfs (needed for full-disk and read-only tests)."""
    if os.geteuid() != 0:
        return "not running as root"
    probe = Path(f"/tmp/stalwart-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"mount failed: {done.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=True)
    finally:
        probe.rmdir()
    return None


#: How many times a failed browser test is run again (STALWART_TEST_RERUNS, default 1, 0 for
#: none). A headless Chromium against a real server on a loaded 2-core machine fails now and
#: then for reasons outside the code under test; each rerun is listed in the run's summary
#: ("R" lines, pytest-rerunfailures) with the first attempt's error, so none goes unseen.
BROWSER_RERUNS = int(os.environ.get("STALWART_TEST_RERUNS", "1"))
_BROWSER_FIXTURES = frozenset({"page", "context", "browser"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give browser tests (those using a Playwright page, context or browser) their reruns."""
    if BROWSER_RERUNS <= 0:
        return
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _BROWSER_FIXTURES and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=BROWSER_RERUNS, reruns_delay=1))


_RERUN_REPORTS: list[pytest.TestReport] = []
#: lines of a rerun's error and of each of its report sections shown in the summary
_RERUN_SHOWN_LINES = 80


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the report of every attempt that failed and was run again."""
    if report.outcome == "rerun":  # type: ignore[comparison-overlap]
        _RERUN_REPORTS.append(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show why each rerun test failed the first time: its error, the server logs and what
    the browser saw (the sections the e2e fixtures attach), so a flake can be chased."""
    if not _RERUN_REPORTS:
        return
    terminalreporter.section("first attempts of rerun tests", sep="=", yellow=True)
    for report in _RERUN_REPORTS:
        terminalreporter.section(report.nodeid, sep="-")
        for title, body in [("error", report.longreprtext), *report.sections]:
            terminalreporter.write_line(f"[{title}]")
            for line in body.splitlines()[-_RERUN_SHOWN_LINES:]:
                terminalreporter.write_line(line)


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(autouse=True)
def _no_log_context_between_tests() -> Iterator[None]:
    """Each test starts with no trace id or other log context bound in this thread.

    Code that binds one for an interaction (a widget callback) leaves it for the script run
    to unbind; a test calling such code directly would otherwise hand its trace id to every
    later test (a CI run saw one reach the jobs and events of tests that ran after it).
    """
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    need("postgres", postgres_problem())
    name = f"stalwart_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def raw_db(db_url: str) -> Iterator[DB]:
    """A DB on an empty database (not migrated)."""
    db = DB(db_url, retry=FAST_RETRY, busy_timeout_ms=200)
    yield db
    db.dispose()


@pytest.fixture
def db(raw_db: DB) -> DB:
    """A DB on a database migrated to head."""
    migrate(raw_db)
    return raw_db


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process that runs our code (with coverage)."""
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


PYTHON = sys.executable


def editor(name: str, user_id: int = 1) -> Principal:
    """A signed-in user with the built-in editor role (may Save, Apply and run jobs)."""
    return DEFAULT_ROLES.principal(user_id=user_id, username=name, role="editor")


def viewer(name: str, user_id: int = 2) -> Principal:
    """A signed-in user with the built-in viewer role (may only look)."""
    return DEFAULT_ROLES.principal(user_id=user_id, username=name, role="viewer")
