"""Invalidation through the UnitOfWork on real databases, and across processes on Redis."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from stalwart.core.cache import Cache, CacheKeys, MemoryBackend, RedisBackend, Scope
from stalwart.core.database import DB, UnitOfWork
from stalwart.models import Project
from stalwart.repositories import ProjectRepository
from tests.conftest import PYTHON, REDIS_URL, ROOT, child_env, need, redis_problem

KEY = CacheKeys.key("projects", "project", 1)
SCOPE = CacheKeys.entity("projects", "project", 1)


class Watching:
    """The app's cache, plus a record of what the database showed when it was invalidated."""

    def __init__(self, cache: Cache, db: DB) -> None:
        self.cache, self.db, self.seen = cache, db, []

    def invalidate(self, *scopes: Scope) -> None:
        with self.db.get_conn() as conn:  # another connection: sees only committed rows
            self.seen.append(conn.execute(select(Project.name).filter_by(id=1)).scalar_one())
        self.cache.invalidate(*scopes)


@pytest.fixture
def cached_db(db: DB) -> Iterator[tuple[DB, Cache, Watching]]:
    # The row exists before the cache is attached: the tests watch what follows its create.
    db.run_tx(lambda uow: ProjectRepository(uow).create(name="v0"))
    cache = Cache(MemoryBackend())
    watch = Watching(cache, db)
    db.invalidator = watch
    yield db, cache, watch
    db.invalidator = None


def read_name(db: DB, cache: Cache) -> str:
    def load() -> str:
        with db.get_conn() as conn:
            return str(conn.execute(select(Project.name).filter_by(id=1)).scalar_one())

    return cache.get_or_compute(KEY, load, ttl=300)


def rename(uow: UnitOfWork, name: str) -> None:
    ProjectRepository(uow).update(1, name=name)
    uow.invalidates(SCOPE)


def test_a_committed_write_is_read_at_once(cached_db: tuple[DB, Cache, Watching]) -> None:
    db, cache, watch = cached_db
    assert read_name(db, cache) == "v0"
    db.run_tx(lambda uow: rename(uow, "v1"))
    assert read_name(db, cache) == "v1"
    assert watch.seen == ["v1"]  # invalidated after the commit, not before


def test_a_rolled_back_write_invalidates_nothing(cached_db: tuple[DB, Cache, Watching]) -> None:
    db, cache, watch = cached_db
    assert read_name(db, cache) == "v0"

    def fail(uow: UnitOfWork) -> None:
        rename(uow, "never")
        raise RuntimeError("validation failed")

    with pytest.raises(RuntimeError):
        db.run_tx(fail)
    with db.unit_of_work() as uow:
        rename(uow, "not committed")
        uow.rollback()
    assert watch.seen == []
    assert cache.stats().invalidations == 0
    assert read_name(db, cache) == "v0"
    assert cache.stats().hits == 1


def test_a_read_that_raced_the_write_is_not_kept(cached_db: tuple[DB, Cache, Watching]) -> None:
    db, cache, _ = cached_db
    read_old, written = threading.Event(), threading.Event()

    def slow_load() -> str:
        with db.get_conn() as conn:
            name = conn.execute(select(Project.name).filter_by(id=1)).scalar_one()
        read_old.set()
        assert written.wait(30)
        return str(name)

    results: list[str] = []
    reader = threading.Thread(
        target=lambda: results.append(cache.get_or_compute(KEY, slow_load, ttl=300))
    )
    reader.start()
    assert read_old.wait(30)
    db.run_tx(lambda uow: rename(uow, "v1"))
    written.set()
    reader.join(30)
    assert results == ["v0"]  # begun before the write: it may answer with the old row
    assert read_name(db, cache) == "v1"  # but it was filed where nobody reads any more


def test_a_failing_invalidation_does_not_undo_the_commit(db: DB) -> None:
    class Broken:
        def invalidate(self, *scopes: Scope) -> None:
            raise ConnectionError("redis gone")

    db.invalidator = Broken()
    try:
        db.run_tx(lambda uow: ProjectRepository(uow).create(name="kept"))
        db.run_tx(lambda uow: rename(uow, "renamed"))
    finally:
        db.invalidator = None
    with db.get_conn() as conn:
        assert conn.execute(select(Project.name).filter_by(id=1)).scalar_one() == "renamed"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=8))
def test_reads_always_show_the_committed_row(
    cached_db: tuple[DB, Cache, Watching], steps: list[tuple[bool, bool]]
) -> None:
    db, cache, _ = cached_db
    for commit, read_between in steps:
        name = uuid.uuid4().hex[:8]
        with db.unit_of_work() as uow:
            rename(uow, name)
            if commit:
                uow.commit()
        if read_between:
            read_name(db, cache)
        with db.get_conn() as conn:
            stored = conn.execute(select(Project.name).filter_by(id=1)).scalar_one()
        assert read_name(db, cache) == stored


# --- Redis: shared by processes -------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    need("redis", redis_problem())
    from redis import Redis

    prefix = f"stalwart-test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = Redis.from_url(REDIS_URL)
    names = list(client.scan_iter(match=prefix + "*"))
    if names:
        client.delete(*names)
    client.close()


@pytest.mark.redis
def test_two_caches_on_one_redis_share_values_and_invalidation(redis_prefix: str) -> None:
    a = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix))
    b = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix))
    key = CacheKeys.key("n", "e", 1)
    assert a.get_or_compute(key, lambda: {"v": (1, 2)}, ttl=60) == {"v": [1, 2]}
    assert b.get_or_compute(key, lambda: "not called", ttl=60) == {"v": [1, 2]}
    a.invalidate(CacheKeys.entity("n", "e", 1))
    assert b.get_or_compute(key, lambda: "fresh", ttl=60) == "fresh"
    other = CacheKeys.key("m", "e", 1)
    a.get_or_compute(other, lambda: 1, ttl=60)
    b.clear("n")
    assert a.get_or_compute(key, lambda: "after clear", ttl=60) == "after clear"
    assert a.get_or_compute(other, lambda: 2, ttl=60) == 1
    b.clear()
    assert a.get_or_compute(other, lambda: 3, ttl=60) == 3
    assert a.version_of(key) == b.version_of(key)
    shared = a.shared_stats()
    assert shared["hits"] == 2
    assert shared["misses"] == 5
    assert shared["invalidations"] == 3
    assert shared["entries"] == 1
    assert a.stats().hits == 1
    a.close()
    b.close()


@pytest.mark.redis
def test_the_local_tier_answers_without_the_value_and_never_serves_a_stale_one(
    redis_prefix: str,
) -> None:
    from redis import Redis

    a = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix))
    b = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix, local_entries=0))
    key = CacheKeys.key("n", "e", 1)
    assert a.get_or_compute(key, lambda: {"rows": [1, 2, 3]}, ttl=60) == {"rows": [1, 2, 3]}
    # The values leave Redis (evicted, say); the counters stay. The process that holds the
    # value under the current generations still answers from its own memory; the other misses.
    client = Redis.from_url(REDIS_URL)
    client.unlink(*client.scan_iter(match=redis_prefix + "v:*"))
    assert a.get_or_compute(key, lambda: "recomputed", ttl=60) == {"rows": [1, 2, 3]}
    assert a.stats().local_hits == 1
    assert b.get_or_compute(key, lambda: "b computed", ttl=60) == "b computed"
    # Another process's invalidation reaches the local tier at once.
    b.invalidate(CacheKeys.entity("n", "e", 1))
    assert a.get_or_compute(key, lambda: "fresh", ttl=60) == "fresh"
    assert b.get_or_compute(key, lambda: "not called", ttl=60) == "fresh"
    b.invalidate(CacheKeys.namespace("n"))
    assert b.get_or_compute(key, lambda: "newest", ttl=60) == "newest"
    assert a.get_or_compute(key, lambda: "not called", ttl=60) == "newest"
    assert a.stats().local_hits == 1  # the value came from Redis: a's copy was stale
    assert a.get_or_compute(key, lambda: "not called", ttl=60) == "newest"
    assert a.stats().local_hits == 2
    stats = a.stats()
    assert (stats.entries, stats.bytes > 0) == (1, True)
    a.clear("n")
    assert a.stats().entries == 0
    client.close()
    a.close()
    b.close()


@pytest.mark.redis
def test_a_redis_that_lost_its_counters_never_brings_back_a_local_copy(
    redis_prefix: str,
) -> None:
    from redis import Redis

    a = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix))
    b = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix, local_entries=0))
    key = CacheKeys.key("n", "e", 3)
    assert a.get_or_compute(key, lambda: "before the write", ttl=60) == "before the write"
    b.invalidate(CacheKeys.entity("n", "e", 3))  # a write elsewhere; a has not looked since
    # Redis restarts without persistence: counters, values and stats are gone, so the
    # counters read 0 again, the generations a's copy was filed under.
    client = Redis.from_url(REDIS_URL)
    client.delete(*client.scan_iter(match=redis_prefix + "*"))
    client.close()
    assert a.get_or_compute(key, lambda: "after the restart", ttl=60) == "after the restart"
    assert a.stats().local_hits == 0
    a.close()
    b.close()


@pytest.mark.redis
def test_the_local_tier_keeps_a_value_no_longer_than_redis_does(redis_prefix: str) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    a = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix, timer=clock))
    b = Cache(RedisBackend(REDIS_URL, prefix=redis_prefix, local_entries=0))
    key = CacheKeys.key("n", "e", 2)
    b.get_or_compute(key, lambda: "from b", ttl=5)
    assert a.get_or_compute(key, lambda: "not called", ttl=60) == "from b"
    clock.now = 4.0  # within what Redis had left (< 5 s): still local
    assert a.get_or_compute(key, lambda: "not called", ttl=60) == "from b"
    assert a.stats().local_hits == 1
    clock.now = 5.5  # past it: the local copy is gone, Redis is asked for the value again
    assert a.get_or_compute(key, lambda: "not called", ttl=60) == "from b"
    assert a.stats().local_hits == 1
    a.close()
    b.close()


CHILD = """
import json, sys
from sqlalchemy import select
from stalwart.bootstrap import init_app
from stalwart.core.cache import CacheKeys
from stalwart.models import Project
from stalwart.repositories import ProjectRepository

ctx = init_app()
key, scope = CacheKeys.key("projects", "project", 1), CacheKeys.entity("projects", "project", 1)
loads = 0

def load():
    global loads
    loads += 1
    with ctx.db.get_conn() as conn:
        return conn.execute(select(Project.name).filter_by(id=1)).scalar_one()

def rename(uow, name):
    ProjectRepository(uow).update(1, name=name)
    uow.invalidates(scope)

for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "read":
        out = {"name": ctx.cache.get_or_compute(key, load, ttl=300), "loads": loads}
    elif cmd == "write":
        ctx.db.run_tx(lambda uow: rename(uow, arg))
        out = {"written": arg}
    else:
        break
    print(json.dumps(out), flush=True)
"""


class Child:
    """An app process that reads and writes project 1 through the cache on command."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-c", CHILD],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def ask(self, command: str) -> dict[str, object]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the child process ended (exit {self.proc.poll()})"
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.redis
def test_a_write_in_one_process_invalidates_the_others_read(
    db: DB, redis_prefix: str, tmp_path: Path
) -> None:
    db.run_tx(lambda uow: ProjectRepository(uow).create(name="v0"))
    env = child_env(
        STALWART_DATABASE_URL=db.url.render_as_string(hide_password=False),
        STALWART_DATA_DIR=str(tmp_path / "data"),
        STALWART_CACHE_BACKEND="redis",
        STALWART_CACHE_REDIS_PREFIX=redis_prefix,
        STALWART_REDIS_URL=REDIS_URL,
        STALWART_MIGRATE_ON_START="false",
        STALWART_LOG_LEVEL="WARNING",
    )
    reader, writer = Child(env), Child(env)
    try:
        assert reader.ask("read") == {"name": "v0", "loads": 1}
        assert reader.ask("read") == {"name": "v0", "loads": 1}  # a hit
        assert writer.ask("read") == {"name": "v0", "loads": 0}  # shared: the reader's value
        assert writer.ask("write v1") == {"written": "v1"}
        assert reader.ask("read") == {"name": "v1", "loads": 2}
        assert writer.ask("read") == {"name": "v1", "loads": 0}
    finally:
        reader.stop()
        writer.stop()


# --- A real read path: the projects overview the home page shows ---------------------------


def test_the_projects_overview_is_cached_and_fresh_after_every_repository_write(db: DB) -> None:
    from stalwart.services.project_service import project_overview

    cache = Cache(MemoryBackend())
    db.invalidator = cache
    try:
        assert project_overview(db, cache) == []
        db.run_tx(lambda uow: ProjectRepository(uow).create(name="a", budget=10.0))
        assert project_overview(db, cache) == [{"status": "planned", "projects": 1, "budget": 10.0}]
        assert project_overview(db, cache) == [{"status": "planned", "projects": 1, "budget": 10.0}]
        assert (cache.stats().hits, cache.stats().misses) == (1, 2)
        db.run_tx(lambda uow: ProjectRepository(uow).update(1, status="active"))
        assert project_overview(db, cache) == [{"status": "active", "projects": 1, "budget": 10.0}]
        db.run_tx(lambda uow: ProjectRepository(uow).delete(1))
        assert project_overview(db, cache) == []
        # A write that changes nothing declares nothing: the cached value stays.
        b = db.run_tx(lambda uow: ProjectRepository(uow).create(name="b").id)
        project_overview(db, cache)
        invalidations = cache.stats().invalidations
        db.run_tx(lambda uow: ProjectRepository(uow).update(b, name="b"))
        assert cache.stats().invalidations == invalidations
    finally:
        db.invalidator = None
