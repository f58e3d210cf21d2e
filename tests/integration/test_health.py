"""Each readiness check against the real thing: SQLite and PostgreSQL, migrations, a real
filesystem (read-only and "full"), Redis, the embedded engine and RQ; and ``app health``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stalwart.core.cache import Cache, MemoryBackend, RedisBackend
from stalwart.core.config import load_config
from stalwart.core.database import DB
from stalwart.core.health import (
    CheckResult,
    HealthCheck,
    cache_check,
    database_check,
    filesystem_check,
    free_bytes,
    job_backend_check,
    migrations_check,
    run_checks,
)
from stalwart.core.job_engines import EmbeddedEngine
from stalwart.core.jobs import JobSettings
from stalwart.core.migrations import downgrade, migrate, revision_chain
from tests.conftest import (
    FAST_RETRY,
    PYTHON,
    REDIS_URL,
    child_env,
    free_port,
    mount_problem,
    need,
    redis_problem,
)


def only(check: HealthCheck) -> CheckResult:
    (result,) = run_checks(check, timeout_s=10).results
    return result


# --- database and migrations ------------------------------------------------------------------


def test_database_check_passes_on_each_database(db: DB) -> None:
    result = only(database_check(db))

    assert result.status == "ok"
    assert result.latency_ms >= 0


def test_database_check_fails_with_a_typed_error_when_postgresql_is_unreachable() -> None:
    db = DB(f"postgresql+psycopg://app:pw@127.0.0.1:{free_port()}/x", connect_timeout_s=1)
    try:
        result = only(database_check(db))
    finally:
        db.dispose()

    assert result.status == "error"
    assert result.error == "DatabaseUnavailableError"
    assert result.error_id


def test_migrations_check_wants_the_head_revision(raw_db: DB) -> None:
    empty = only(migrations_check(raw_db))
    migrate(raw_db)
    at_head = only(migrations_check(raw_db))
    older = revision_chain()[-2]
    downgrade(raw_db, older)
    behind = only(migrations_check(raw_db))

    assert (empty.status, empty.error) == ("error", "MigrationError")
    assert at_head.status == "ok"
    assert at_head.detail is not None
    assert revision_chain()[-1] in at_head.detail
    assert (behind.status, behind.error) == ("error", "MigrationError")
    assert behind.detail is not None
    assert older in behind.detail


# --- filesystem -----------------------------------------------------------------------------


def test_filesystem_check_passes_on_a_writable_directory_and_leaves_nothing(tmp_path: Path) -> None:
    result = only(filesystem_check(tmp_path / "data", min_free_bytes=1))

    assert result.status == "ok"
    assert list((tmp_path / "data").iterdir()) == []


def test_filesystem_check_fails_below_the_free_space_threshold(tmp_path: Path) -> None:
    # Rather than filling a disk: ask for more than this disk has free.
    above = free_bytes(tmp_path) + 1024**4
    result = only(filesystem_check(tmp_path, min_free_bytes=above))

    assert (result.status, result.error) == ("error", "StorageFullError")
    assert result.detail is not None
    assert "STALWART_MIN_FREE_BYTES" in result.detail


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs mounted read-only (root) at a fresh directory."""
    need("root", mount_problem())
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.root
def test_filesystem_check_fails_on_a_read_only_filesystem(read_only_dir: Path) -> None:
    result = only(filesystem_check(read_only_dir, min_free_bytes=0))

    assert (result.status, result.error) == ("error", "ReadOnlyStorageError")


# --- cache ------------------------------------------------------------------------------------


def test_cache_check_passes_for_the_memory_cache() -> None:
    result = only(cache_check(Cache(MemoryBackend())))

    assert (result.status, result.detail) == ("ok", "memory")


@pytest.mark.redis
def test_cache_check_pings_redis() -> None:
    need("redis", redis_problem())
    cache = Cache(RedisBackend(REDIS_URL))
    try:
        result = only(cache_check(cache))
    finally:
        cache.close()

    assert (result.status, result.detail) == ("ok", "redis")


def test_cache_check_fails_when_redis_does_not_answer() -> None:
    cache = Cache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        result = only(cache_check(cache))
    finally:
        cache.close()

    assert (result.status, result.error) == ("error", "CacheUnavailableError")
    assert not result.critical  # values are computed uncached: the app stays ready


# --- job backend ------------------------------------------------------------------------------


def test_jobs_check_follows_the_embedded_engine_of_this_process(db: DB) -> None:
    cfg = load_config(jobs_engine="embedded")
    engine = EmbeddedEngine(db, JobSettings.from_config(cfg), workers=1)
    current: list[EmbeddedEngine | None] = [None]
    check = job_backend_check(cfg, lambda: current[0])

    none_here = only(check)
    current[0] = engine
    engine.start()
    try:
        alive = only(check)
    finally:
        engine.stop(wait_s=1)
    stopped = only(check)

    assert none_here.status == "skipped"
    assert alive.status == "ok"
    assert (stopped.status, stopped.error) == ("error", "JobBackendUnavailableError")
    assert stopped.critical  # this process's own workers: a restart brings them back


@pytest.mark.redis
def test_jobs_check_pings_rq_s_redis() -> None:
    need("redis", redis_problem())
    cfg = load_config(jobs_engine="rq", redis_url=REDIS_URL, jobs_queue="health-test")

    result = only(job_backend_check(cfg, lambda: None))

    assert result.status == "ok"
    assert result.detail is not None
    assert "health-test" in result.detail


def test_jobs_check_fails_when_rq_s_redis_does_not_answer() -> None:
    cfg = load_config(jobs_engine="rq", redis_url=f"redis://127.0.0.1:{free_port()}/0")

    result = only(job_backend_check(cfg, lambda: None))

    assert (result.status, result.error) == ("error", "JobBackendUnavailableError")
    assert not result.critical  # jobs are saved and dispatched once Redis answers


# --- app health -------------------------------------------------------------------------------


def app_health(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", "health", *args],
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=120,
    )


def test_app_health_exits_0_when_ready_and_1_when_not(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"STALWART_DATA_DIR": str(data), "STALWART_DATABASE_URL": ""}
    empty = app_health(**env)
    db = DB(f"sqlite:///{data / 'stalwart.db'}", retry=FAST_RETRY)
    migrate(db)
    db.dispose()
    ready = app_health("--json", **env)
    too_little_space = app_health(
        "--json", **env, STALWART_MIN_FREE_BYTES=str(free_bytes(data) + 1024**4)
    )
    cache_down = app_health(
        **env,
        STALWART_CACHE_BACKEND="redis",
        STALWART_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )

    assert empty.returncode == 1, empty.stdout + empty.stderr
    assert "migrations  error" in empty.stdout
    assert "ready: no" in empty.stdout
    assert ready.returncode == 0, ready.stdout + ready.stderr
    report = json.loads(ready.stdout)
    assert report["status"] == "ok"
    assert set(report["checks"]) == {"database", "migrations", "filesystem", "cache", "jobs"}
    assert report["checks"]["jobs"]["status"] == "skipped"  # a command line runs no workers
    assert too_little_space.returncode == 1
    failed = json.loads(too_little_space.stdout)["checks"]["filesystem"]
    assert failed["error"] == "StorageFullError"
    assert failed["error_id"] in too_little_space.stderr  # logged with its stack
    # The cache's Redis is down: slower, not broken, so still ready (exit 0), but said.
    assert cache_down.returncode == 0, cache_down.stdout + cache_down.stderr
    assert "CacheUnavailableError" in cache_down.stdout
    assert "ready: yes (degraded)" in cache_down.stdout


def test_app_health_with_url_exits_1_when_nothing_answers() -> None:
    out = app_health("--url", f"http://127.0.0.1:{free_port()}/readyz", "--timeout", "2")

    assert out.returncode == 1
    assert "did not answer" in out.stderr
    assert "ready: no" in out.stdout
