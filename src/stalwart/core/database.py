"""Database access: the engine, read connections, the UnitOfWork and ``run_tx``.

The write path is ``Repository -> UnitOfWork -> DB``. A UnitOfWork is one transaction that
carries the data change and its audit rows; it rolls back unless ``commit()`` is called.
``DB.run_tx(fn)`` runs ``fn(uow)`` in a UnitOfWork, retries transient failures with
exponential backoff and jitter, and makes a write with an idempotency key happen once.

SQLite (the embedded default) runs in WAL mode with foreign keys on, a busy timeout and
``BEGIN IMMEDIATE`` for writes; writes from one process are serialised through one lock
(as Datasette does with its write thread), so writers never fight over the database lock.
PostgreSQL (psycopg 3) runs the same code.
"""

from __future__ import annotations

import contextvars
import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import ConnectionPoolEntry
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from stalwart.core.config import AppConfig
from stalwart.core.logs import current_trace_id, get_logger
from stalwart.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    IntegrityViolationError,
    ReadOnlyStorageError,
    RetriesExhaustedError,
    StorageFullError,
    TransientDatabaseError,
)
from stalwart.models import IdempotencyKey

if TYPE_CHECKING:
    from stalwart.core.cache import Scope

T = TypeVar("T")
log = get_logger(__name__)

# SQLSTATEs that PostgreSQL itself documents as "retry the transaction".
_PG_RETRY_STATES: Final = {
    "40001": "serialization",  # serialization_failure
    "40P01": "deadlock",  # deadlock_detected
    "55P03": "busy",  # lock_not_available
}
_PG_DISCONNECT_STATES: Final = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, starting


@dataclass(frozen=True)
class RetryPolicy:
    """How ``run_tx`` retries a transient failure."""

    max_attempts: int = 5
    initial_s: float = 0.05
    max_s: float = 2.0


@dataclass(frozen=True)
class RetryNotice:
    """Told to ``run_tx``'s ``on_retry`` callback before it waits and tries again."""

    attempt: int
    max_attempts: int
    wait_s: float
    error: TransientDatabaseError


class Invalidator(Protocol):
    """What a committed UnitOfWork tells about the cache scopes its writes touched."""

    def invalidate(self, *scopes: Scope) -> None:
        """Make the cached values of ``scopes`` unreachable."""


class TxMonitor(Protocol):
    """What ``run_tx`` tells about every transaction (the app's ``Metrics``)."""

    def transaction_retried(self, kind: str) -> None:
        """A transient failure of ``kind`` (busy, deadlock, disconnect...) is retried."""

    def transaction_ended(self, seconds: float, error: BaseException | None) -> None:
        """``run_tx`` returned after ``seconds`` (retries included), or raised ``error``."""


class DB:
    """One database: its engine, its dialect and the serialised write path."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 5000,
        pool_size: int = 5,
        connect_timeout_s: int = 5,
        retry: RetryPolicy | None = None,
        invalidator: Invalidator | None = None,
        monitor: TxMonitor | None = None,
    ) -> None:
        self.url = make_url(url)
        #: told the cache scopes of every committed UnitOfWork (the app's Cache)
        self.invalidator = invalidator
        #: told how long each run_tx took, its retries and failures (the app's Metrics)
        self.monitor = monitor
        self.dialect: str = self.url.get_backend_name()
        self.retry = retry or RetryPolicy()
        self.busy_timeout_ms = busy_timeout_ms
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            self.sqlite_path = _sqlite_file(self.url.database)
            self.engine = self._sqlite_engine(busy_timeout_ms)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                pool_pre_ping=True,
                connect_args={"connect_timeout": connect_timeout_s},
            )
        # SQLite allows one writer at a time; queue this process's writers here instead of
        # letting them spin on SQLITE_BUSY. PostgreSQL needs no such lock.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )
        self._in_tx = threading.local()
        self._behind = _WriteBehind(self)

    @classmethod
    def from_config(
        cls,
        cfg: AppConfig,
        *,
        invalidator: Invalidator | None = None,
        monitor: TxMonitor | None = None,
    ) -> DB:
        """Build the DB the settings describe."""
        return cls(
            cfg.resolved_database_url,
            busy_timeout_ms=cfg.db_busy_timeout_ms,
            pool_size=cfg.db_pool_size,
            connect_timeout_s=cfg.db_connect_timeout_s,
            retry=RetryPolicy(cfg.tx_max_attempts, cfg.tx_backoff_initial_s, cfg.tx_backoff_max_s),
            invalidator=invalidator,
            monitor=monitor,
        )

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    def _sqlite_engine(self, busy_timeout_ms: int) -> Engine:
        if self.sqlite_path is not None:
            _ensure_directory(self.sqlite_path.parent)
        engine = create_engine(
            self.url,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # Take transaction control away from the sqlite3 module so that we can say
            # BEGIN IMMEDIATE for writes (see _on_begin).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA foreign_keys = ON")
                # FULL: a commit that returned survives power loss, not only a crash.
                cur.execute("PRAGMA synchronous = FULL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front, so it never has to upgrade a
            # read lock (which fails at once with SQLITE_BUSY instead of waiting).
            mode = "DEFERRED" if conn.get_execution_options().get("stalwart_read") else "IMMEDIATE"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextmanager
    def get_conn(self) -> Iterator[Connection]:
        """A connection for reads; its transaction is rolled back at the end."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(stalwart_read=True)
                yield conn
        except DBAPIError as exc:
            raise self.translate_final(exc) from exc

    def check(self) -> float:
        """One round trip to the database; returns its latency in ms or raises a typed error."""
        start = time.perf_counter()
        with self.get_conn() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
        return (time.perf_counter() - start) * 1000

    def unit_of_work(
        self, *, user: str = "system", trace_id: str | None = None, read_only: bool = False
    ) -> UnitOfWork:
        """A new UnitOfWork on this database (use it as a context manager).

        ``read_only`` takes no write lock (SQLite begins DEFERRED) and refuses to commit.
        """
        return UnitOfWork(self, user=user, trace_id=trace_id, read_only=read_only)

    def run_tx(
        self,
        fn: Callable[[UnitOfWork], T],
        *,
        idempotency_key: str | None = None,
        user: str = "system",
        on_retry: Callable[[RetryNotice], None] | None = None,
        retry: RetryPolicy | None = None,
    ) -> T:
        """Run ``fn(uow)`` in one transaction and commit it, retrying transient failures.

        With an ``idempotency_key`` the first committed result is stored (as JSON) and a
        replay of the key returns it without running ``fn`` again. ``retry`` overrides the
        database's policy (an interaction may prefer to give up fast and retry later).
        """
        monitor = self.monitor
        if monitor is None:
            return self._run_tx(fn, idempotency_key, user, on_retry, retry)
        started = time.perf_counter()
        try:
            result = self._run_tx(fn, idempotency_key, user, on_retry, retry)
        except BaseException as exc:
            monitor.transaction_ended(time.perf_counter() - started, exc)
            raise
        monitor.transaction_ended(time.perf_counter() - started, None)
        return result

    def _run_tx(
        self,
        fn: Callable[[UnitOfWork], T],
        idempotency_key: str | None,
        user: str,
        on_retry: Callable[[RetryNotice], None] | None,
        retry: RetryPolicy | None,
    ) -> T:
        policy = retry or self.retry

        def before_sleep(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            assert isinstance(err, TransientDatabaseError)
            wait_s = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "transaction retry",
                attempt=state.attempt_number,
                max_attempts=policy.max_attempts,
                wait_s=round(wait_s, 3),
                kind=err.kind,
                error=err.message,
            )
            if self.monitor is not None:
                self.monitor.transaction_retried(err.kind)
            if on_retry is not None:
                on_retry(RetryNotice(state.attempt_number, policy.max_attempts, wait_s, err))

        retrying = Retrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_s, max=policy.max_s, jitter=policy.initial_s
            ),
            retry=retry_if_exception_type(TransientDatabaseError),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: T = retrying(self._run_once, fn, idempotency_key, user)
            return result
        except TransientDatabaseError as exc:
            log.error("transaction gave up", attempts=policy.max_attempts, kind=exc.kind)
            if exc.kind == "disconnect":
                raise DatabaseUnavailableError(
                    f"The database at {self.safe_url} could not be reached "
                    f"after {policy.max_attempts} attempts: {exc.message}",
                    "Your input is kept. Check that the database server is running; "
                    "then try again.",
                ) from exc
            raise RetriesExhaustedError(
                f"The database stayed busy ({exc.kind}) through {policy.max_attempts} "
                "attempts; nothing was changed."
            ) from exc

    def _run_once(self, fn: Callable[[UnitOfWork], T], key: str | None, user: str) -> T:
        if getattr(self._in_tx, "active", False):
            # On SQLite the inner call would wait forever for the outer one's write lock.
            raise RuntimeError("run_tx was called inside run_tx: pass the outer `uow` down instead")
        self._in_tx.active = True
        try:
            with self._write_lock, UnitOfWork(self, user=user) as uow:
                if key is not None:
                    stored = uow.session.get(IdempotencyKey, key)
                    if stored is not None:
                        log.info("idempotent replay", idempotency_key=key)
                        return stored.result  # type: ignore[no-any-return]
                result = fn(uow)
                if key is not None:
                    result = json.loads(json.dumps(result, default=str))
                    uow.session.add(IdempotencyKey(key=key, result=result))
                uow.commit()
                return result
        except IntegrityError as exc:
            if key is not None:
                replay = self._stored_result(key)
                if replay is not None:
                    # Another writer committed the same key first: theirs is the result.
                    return replay[0]  # type: ignore[no-any-return]
            raise self.translate(exc) from exc
        except DBAPIError as exc:
            raise self.translate(exc) from exc
        except StaleDataError as exc:
            # The row changed between our read and our write: run the whole unit again on
            # fresh data (a caller that pinned a version then gets a ConflictError).
            raise TransientDatabaseError(
                f"A row changed under this write: {exc}", kind="stale"
            ) from exc
        finally:
            self._in_tx.active = False

    def _stored_result(self, key: str) -> tuple[Any] | None:
        with self.unit_of_work(read_only=True) as uow:  # a read: no SQLite write lock
            stored = uow.session.get(IdempotencyKey, key)
            return (stored.result,) if stored is not None else None

    def translate_final(self, exc: DBAPIError) -> DatabaseError:
        """Like ``translate``, for a caller that will not retry: a lost connection is final."""
        err = self.translate(exc)
        if isinstance(err, TransientDatabaseError) and err.kind == "disconnect":
            return DatabaseUnavailableError(err.message)
        return err

    def translate(self, exc: DBAPIError) -> DatabaseError:
        """Turn a driver error into Stalwart's typed error (transient or permanent)."""
        orig = exc.orig
        detail = str(orig).strip().splitlines()[0] if orig is not None else str(exc)
        if self.dialect == "sqlite":
            return self._translate_sqlite(exc, detail)
        return self._translate_postgres(exc, detail)

    def _translate_sqlite(self, exc: DBAPIError, detail: str) -> DatabaseError:
        code = str(getattr(exc.orig, "sqlite_errorname", ""))
        lowered = detail.lower()
        where = str(self.sqlite_path.parent) if self.sqlite_path else "memory"
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered:
            return TransientDatabaseError(f"The database is busy: {detail}", kind="busy")
        if code == "SQLITE_FULL" or "disk is full" in lowered:
            return StorageFullError(f"The disk holding {where} is full: {detail}")
        if isinstance(exc, IntegrityError):
            return IntegrityViolationError(f"The change breaks a rule of the data: {detail}")
        readonly = code.startswith("SQLITE_READONLY") or "readonly" in lowered
        cantopen = code.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered
        if readonly or (cantopen and not _writable(self.sqlite_path)):
            return ReadOnlyStorageError(
                f"The database in {where} cannot be written (read-only): {detail}"
            )
        if code.startswith("SQLITE_IOERR") or "disk i/o error" in lowered:
            if self.sqlite_path is not None and _nearly_full(self.sqlite_path.parent):
                return StorageFullError(f"The disk holding {where} is full: {detail}")
            return DatabaseError(
                f"The disk holding {where} reported an I/O error: {detail}",
                "Check the disk and its free space; your input is kept.",
            )
        if cantopen:
            return DatabaseUnavailableError(f"The database in {where} cannot be opened: {detail}")
        return DatabaseError(f"Database error: {detail}")

    def _translate_postgres(self, exc: DBAPIError, detail: str) -> DatabaseError:
        state = getattr(exc.orig, "sqlstate", None)
        if state in _PG_RETRY_STATES:
            return TransientDatabaseError(
                f"The database asked to retry: {detail}", kind=_PG_RETRY_STATES[state]
            )
        if (
            exc.connection_invalidated
            or state in _PG_DISCONNECT_STATES
            or (state or "").startswith("08")
            or (state is None and type(exc.orig).__name__ == "OperationalError")
        ):
            host = f"{self.url.host}:{self.url.port or 5432}"
            return TransientDatabaseError(
                f"The connection to the database at {host} failed: {detail}", kind="disconnect"
            )
        if state == "53100":
            return StorageFullError(f"The database server's disk is full: {detail}")
        if state == "25006":
            return ReadOnlyStorageError(f"The database is read-only: {detail}")
        if isinstance(exc, IntegrityError):
            return IntegrityViolationError(f"The change breaks a rule of the data: {detail}")
        return DatabaseError(f"Database error: {detail}")

    def write_behind(self, key: str, fn: Callable[[UnitOfWork], None]) -> None:
        """Run ``fn`` in a transaction of its own soon, on a background thread.

        For small writes nobody waits for (where a user is, when a session was last seen), so
        that they cost an interaction nothing. Of several ``fn`` waiting under one ``key``
        only the newest runs. A failure (after ``run_tx``'s retries) is logged and dropped:
        use it only for what may be lost. ``flush_behind()`` waits for what is pending.
        """
        self._behind.put(key, fn)

    def flush_behind(self, timeout_s: float = 10.0) -> bool:
        """Wait until the writes ``write_behind`` took so far are done; False on timeout."""
        return self._behind.flush(timeout_s)

    def fork_guard(self) -> AbstractContextManager[Any]:
        """Hold this while forking a process that will open the database itself.

        SQLite keeps its file-lock state per process in memory; a child forked while another
        thread of ours is inside a write transaction inherits state saying that this process
        holds the lock, and every write of the child then fails with "database is locked"
        although no one holds it any more. Holding the write lock means no write transaction
        of this process is open (reads do not take it: they take no write lock in WAL mode).
        On PostgreSQL it holds nothing.
        """
        return self._write_lock

    def dispose(self) -> None:
        """Finish the pending write-behind, then close every pooled connection."""
        self._behind.close()
        self.engine.dispose()


class _WriteBehind:
    """One background thread that runs the newest pending write of each key."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Callable[[UnitOfWork], None], contextvars.Context]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def put(self, key: str, fn: Callable[[UnitOfWork], None]) -> None:
        with self._lock:
            waiting = key in self._pending
            # The caller's context (its trace id) goes with the write, for the logs.
            self._pending[key] = (fn, contextvars.copy_context())
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="stalwart-write-behind")
            if not waiting:
                self._executor.submit(self._run, key)

    def _run(self, key: str) -> None:
        with self._lock:
            fn, context = self._pending.pop(key)
        try:
            context.run(self.db.run_tx, fn)
        except Exception as err:
            context.run(
                log.warning,
                "write-behind failed",
                key=key,
                error=f"{type(err).__name__}: {err}",
            )

    def flush(self, timeout_s: float) -> bool:
        with self._lock:
            executor = self._executor
        if executor is None:
            return True
        try:
            executor.submit(lambda: None).result(timeout_s)  # runs after all queued before it
        except FutureTimeout:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class UnitOfWork:
    """One transaction: the data change, its audit rows, then ``commit()`` or nothing.

    Leaving the ``with`` block without ``commit()`` rolls everything back.
    """

    def __init__(
        self,
        db: DB,
        *,
        user: str = "system",
        trace_id: str | None = None,
        read_only: bool = False,
    ) -> None:
        from stalwart.core.audit import AuditLog  # audit builds on this module

        self.db = db
        self.user = user
        self.trace_id = trace_id or current_trace_id()
        self.read_only = read_only
        bind = db.engine.execution_options(stalwart_read=True) if read_only else db.engine
        self.session = Session(bind, expire_on_commit=False, autoflush=True)
        self.audit = AuditLog(self)
        self._committed = False
        self._after_commit: list[Callable[[], None]] = []
        self._invalidates: list[Scope] = []

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.session.rollback()
        self.session.close()

    @property
    def committed(self) -> bool:
        """True once ``commit()`` has returned."""
        return self._committed

    def lock(self, name: str) -> None:
        """Hold a named lock until this transaction ends (serialises e.g. saves of one form).

        PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do, its writers are
        serialised already.
        """
        if self.db.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (never on rollback)."""
        self._after_commit.append(callback)

    def invalidates(self, *scopes: Scope) -> None:
        """Declare cache scopes this write changes; they are invalidated after the commit.

        Never before (a reader could cache the old rows again before they change) and never
        on rollback (nothing changed).
        """
        self._invalidates.extend(scopes)

    def commit(self) -> None:
        """Write the pending audit rows and commit; then invalidate, then run the callbacks."""
        if self.read_only:
            raise RuntimeError("a read-only unit of work cannot commit")
        self.audit.write_pending()
        self.session.commit()
        self._committed = True
        if self._invalidates and self.db.invalidator is not None:
            try:
                self.db.invalidator.invalidate(*self._invalidates)
            except Exception:  # committed; the cache's TTL bounds what stays stale
                log.exception(
                    "cache invalidation failed after commit", scopes=len(self._invalidates)
                )
        for callback in self._after_commit:
            try:
                callback()
            except Exception as err:  # the data is committed; a callback must not undo that
                log.exception("after-commit callback failed", callback=repr(callback))
                del err

    def rollback(self) -> None:
        """Discard everything done in this unit of work."""
        self.session.rollback()
        self.audit.discard_pending()
        self._invalidates.clear()


def _sqlite_file(database: str | None) -> Path | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _ensure_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            raise ReadOnlyStorageError(
                f"The data directory {path} cannot be created (read-only): {exc}"
            ) from exc
        if exc.errno == errno.ENOSPC:
            raise StorageFullError(f"The data directory {path} cannot be created: {exc}") from exc
        raise DatabaseUnavailableError(
            f"The data directory {path} cannot be created: {exc}",
            "Point STALWART_DATA_DIR at a writable directory.",
        ) from exc


def _writable(path: Path | None) -> bool:
    if path is None:
        return True
    target = path if path.exists() else path.parent
    return target.exists() and os.access(target, os.W_OK)


def _nearly_full(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory).free < 64 * 1024
    except OSError:
        return False
