"""``DB.fork_guard``: a process forked while another thread is inside a SQLite write
transaction must still be able to write (the RQ worker forks a work horse per job while its
sweeper thread writes)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.migrations import migrate

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")

TOUCH = "UPDATE alembic_version SET version_num = version_num"


def fork_and_write(url: str, fork: Callable[[Callable[[], int]], int]) -> int:
    """Fork (through ``fork``) a child that waits, then writes with a DB of its own; its exit
    status: 0 if the write committed."""

    def child_or_parent() -> int:
        pid = os.fork()
        if pid == 0:  # the child: the parent's transaction has ended by the time it writes
            time.sleep(0.5)
            try:
                DB(url, busy_timeout_ms=500).run_tx(lambda uow: uow.session.execute(text(TOUCH)))
            except BaseException:
                os._exit(1)
            os._exit(0)
        return pid

    pid = fork(child_or_parent)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextmanager
def holding_a_write(db: DB) -> Iterator[threading.Event]:
    """Inside: another thread is inside a write transaction on ``db`` until the yielded event
    is set (or 10 s pass); on the way out it is set and the writer joined."""
    inside, release = threading.Event(), threading.Event()

    def long_write(uow: UnitOfWork) -> None:
        uow.session.execute(text(TOUCH))
        inside.set()
        release.wait(10)

    writer = threading.Thread(target=db.run_tx, args=(long_write,))
    writer.start()
    try:
        assert inside.wait(5)
        yield release
    finally:
        release.set()
        writer.join(10)


def test_a_child_forked_during_a_write_can_write_only_with_the_guard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db = DB(url)
    migrate(db)

    def during_a_write(fork: Callable[[], int], *, guarded: bool) -> int:
        with holding_a_write(db) as release:
            if guarded:
                # The guard waits for the write to end: release it a little later.
                threading.Timer(0.2, release.set).start()
                with db.fork_guard():
                    return fork()
            pid = fork()
            release.set()
            return pid

    # Without the guard: SQLite's in-process lock state is inherited, and the child's writes
    # stay "locked" although the parent's transaction ended (what the guard is for).
    assert fork_and_write(url, lambda f: during_a_write(f, guarded=False)) == 1
    assert fork_and_write(url, lambda f: during_a_write(f, guarded=True)) == 0
    db.dispose()


@pytest.mark.redis
def test_the_rq_worker_pool_forks_its_workers_only_between_writes(tmp_path: Path) -> None:
    """``app jobs worker --concurrency N`` forks N worker processes (and again when one dies)
    while its sweeper thread writes: like the work horses, they wait for the write to end."""
    from redis import Redis
    from rq import Queue

    from stalwart.core.job_engines import _GuardedWorkerPool
    from tests.conftest import REDIS_URL, need, redis_problem
    from tests.jobs_harness import clean_redis, unique_queue

    need("redis", redis_problem())
    db = DB(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(db)
    queue_name = unique_queue()
    redis = Redis.from_url(REDIS_URL)
    pool = _GuardedWorkerPool(db, [Queue(queue_name, connection=redis)], connection=redis)
    starter = threading.Thread(target=pool.start_worker, kwargs={"burst": True})
    try:
        with holding_a_write(db):
            starter.start()
            starter.join(0.5)
            assert starter.is_alive()
            assert not pool.worker_dict  # no fork inside the write
        starter.join(10)
        assert len(pool.worker_dict) == 1  # forked once the write ended
    finally:
        for worker in pool.worker_dict.values():
            worker.process.join(20)  # a burst worker on an empty queue ends by itself
        clean_redis(queue_name)
        redis.close()
        db.dispose()
