"""Error reports kept in the database: what ``log_error`` logs, also stored in ``error_reports``
so that the System page can list recent errors and find one by the id a user was shown.

``ErrorReportSink`` is a logging handler on the ``log_error`` logger (``ERRORS_LOGGER``), as the
metrics' error counter is, so ``log_error`` itself is unchanged. It sees the event after the
logging chain's processors ran, so the stack and the context are PII-masked exactly like the
log line. Storing costs the caller one list append: rows are inserted in batches by the
database's write-behind thread (``DB.write_behind``, as ``core.tracking`` does), never on the
request path. Like events, reports can be lost (a process killed before the write ran, a
database down through the retries); the log line is the record that is never lost.

``init_app()`` installs the sink (``install_error_reports``); ``shutdown_app()`` removes it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import insert

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import ERRORS_LOGGER
from stalwart.core.metric_history import instance_name
from stalwart.models.base import utcnow
from stalwart.models.system import ErrorReport

#: the write-behind key of the pending reports (one batch insert runs at a time)
WRITE_KEY: Final = "error_reports"
#: reports kept while the database is slow or down; beyond it the oldest are dropped
MAX_PENDING: Final = 1_000
MAX_STACK_CHARS: Final = 20_000
MAX_MESSAGE_CHARS: Final = 2_000
MAX_CONTEXT_CHARS: Final = 4_000
#: fields of the log line that are its own columns or logging plumbing, not context
_NOT_CONTEXT: Final = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "ts",
        "trace_id",
        "error_id",
        "error_type",
        "error",
        "stack",
        "exc_info",
        "_record",
        "_from_structlog",
    }
)


def report_row(event: dict[str, Any], instance: str) -> dict[str, Any] | None:
    """The ``error_reports`` row of a ``log_error`` event (None: not a report)."""
    error_id = event.get("error_id")
    if not error_id:
        return None
    # The line's other fields (page, span, session and user pseudonyms, version...) where set.
    context = {k: v for k, v in event.items() if k not in _NOT_CONTEXT and v is not None}
    text = json.dumps(context, default=str)
    if len(text) > MAX_CONTEXT_CHARS:
        context = {"truncated": text[:MAX_CONTEXT_CHARS]}
    else:
        context = json.loads(text)
    trace_id = event.get("trace_id")
    return {
        "error_id": str(error_id)[:32],
        "ts": utcnow(),
        "error_type": str(event.get("error_type") or "unknown")[:200],
        "message": str(event.get("error") or "")[:MAX_MESSAGE_CHARS],
        "stack": str(event.get("stack") or "")[-MAX_STACK_CHARS:],
        "context": context,
        "trace_id": str(trace_id)[:64] if trace_id else None,
        "instance": instance,
    }


class ErrorReportSink(logging.Handler):
    """Queues every ``log_error`` report for the database's write-behind thread."""

    def __init__(self, db: DB, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__(level=logging.ERROR)
        self.db = db
        self.max_pending = max_pending
        self.instance = instance_name()
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()
        #: reports dropped because too many were pending
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the report; structlog hands the (masked) event dict over as the message."""
        event = record.msg
        if not isinstance(event, dict):
            return
        try:
            row = report_row(dict(event), self.instance)
            if row is None:
                return
            with self._pending_lock:
                if len(self._pending) >= self.max_pending:
                    del self._pending[0]
                    self.dropped += 1
                self._pending.append(row)
            self.db.write_behind(WRITE_KEY, self._writer())
        except Exception:  # reporting an error must never raise into its caller
            self.handleError(record)

    def wait_written(self, timeout_s: float = 10.0) -> bool:
        """Wait until the reports queued so far are written (or failed); False on timeout.
        (Not ``flush``: logging calls that at exit, when no one should wait for a database.)"""
        return self.db.flush_behind(timeout_s)

    def _writer(self) -> Callable[[UnitOfWork], None]:
        # As core.tracking: the newest closure takes every report pending when it runs, and
        # keeps its batch for run_tx's retries.
        taken: list[dict[str, Any]] | None = None

        def write(uow: UnitOfWork) -> None:
            nonlocal taken
            if taken is None:
                with self._pending_lock:
                    taken, self._pending = self._pending, []
            if taken:
                uow.session.execute(insert(ErrorReport), taken)

        return write


def install_error_reports(db: DB | None) -> ErrorReportSink | None:
    """Store ``log_error``'s reports in ``db`` from now on (None: stop storing them)."""
    logger = logging.getLogger(ERRORS_LOGGER)
    for handler in list(logger.handlers):
        if isinstance(handler, ErrorReportSink):
            logger.removeHandler(handler)
    if db is None:
        return None
    sink = ErrorReportSink(db)
    logger.addHandler(sink)
    return sink
