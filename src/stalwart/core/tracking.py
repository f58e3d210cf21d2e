"""Product tracking: ``track(event, props)`` records a step of a user's journey.

Its own module rather than a part of ``core.metrics``: metrics are per-process counters that
Prometheus scrapes; events are rows in the database, one per thing a user did, queried later
as funnels. Nothing of one is needed by the other.

Recording costs an interaction almost nothing: ``track`` builds the row (the keyed
pseudonyms, the masked props) and appends it to this process's pending list; the rows are
inserted in batches by the database's write-behind thread (``DB.write_behind``, the path that
also stores where a user is), so no interaction waits for a commit. The cost is that events
can be lost: a process killed before its write-behind ran, or a database that stays down
through ``run_tx``'s retries, drops them (logged as ``write-behind failed`` with key
``events``). ``track`` never raises into the caller: a failure is logged and the event dropped.

Privacy: an event holds keyed pseudonyms (HMAC-SHA256 with the app's secret key, as
``core.pii`` makes them) of the session and the user, never a username or a session id; props
pass through the PII masker (secrets redacted, e-mail addresses, phone numbers and IBANs
pseudonymised). Who the session and the user are is passed as the ``Principal`` acting, not
read from the script's context: Streamlit runs callbacks and fragment reruns outside the page
shell's context, and services have the principal at hand anyway. The trace id and the page
do come from the context (``core.logs.trace``) when it holds them.

``init_app()`` builds the process's ``Tracker`` and installs it; with none installed (a bare
test, a CLI command that did not build the app) ``track`` does nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy import insert

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import current_trace_id, get_logger
from stalwart.core.pii import PIIMasker
from stalwart.core.rbac import Principal
from stalwart.models import Event
from stalwart.models.base import marked_fields, utcnow

#: the event of a page shown (funnels tell pages apart by the event's ``page``)
PAGE_VIEW: Final = "page.view"
FORM_SAVE: Final = "form.save"
FORM_APPLY: Final = "form.apply"
JOB_START: Final = "job.start"
DATA_EXPORT: Final = "data.export"

#: the write-behind key of the pending events (one batch insert runs at a time)
WRITE_KEY: Final = "events"
#: pending events kept while the database is slow; beyond it the oldest are dropped
MAX_PENDING: Final = 10_000
#: props bigger than this (as JSON) are refused: an event is a marker, not a payload
MAX_PROPS_CHARS: Final = 2_000
_NAME: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
_NAME_MAX: Final = 100

log = get_logger(__name__)


def session_key(actor: Principal) -> str | None:
    """What a funnel counts as one session of ``actor``: the login session; with sign-in off,
    the browser (whose identity is then the user's name); None for the system or nobody."""
    if actor.session_id is not None:
        return actor.session_id
    return actor.username if actor.kind == "user" else None


class Tracker:
    """Builds event rows and hands them, in batches, to the database's write-behind thread."""

    def __init__(self, db: DB, key: str | bytes, *, max_pending: int = MAX_PENDING) -> None:
        self.db = db
        self.max_pending = max_pending
        pii_keys, secret_keys = marked_fields()
        self._masker = PIIMasker("hash", key, pii_keys=pii_keys, secret_keys=secret_keys)
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        #: events dropped because too many were pending (the database is slow or down)
        self.dropped = 0

    def pseudonym(self, kind: str, value: str) -> str:
        """The keyed pseudonym of ``value`` (``kind:<12 hex>``), as stored in events."""
        return self._masker.pseudonym(kind, value)

    def record(
        self,
        event: str,
        props: Mapping[str, Any] | None = None,
        *,
        actor: Principal | None = None,
        page: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Queue one event; raises ``ValueError`` for a bad name or props (``track`` logs it)."""
        if len(event) > _NAME_MAX or not _NAME.fullmatch(event):
            raise ValueError(
                f"event name {event[:120]!r}: use lower-case dotted words, e.g. 'form.save'"
            )
        context = structlog.contextvars.get_contextvars()
        where = page if page is not None else context.get("page")
        key = session_key(actor) if actor is not None else None
        row = {
            "ts": at or utcnow(),
            "name": event,
            "props": self._props(props),
            "session": self.pseudonym("session", key) if key is not None else None,
            "user_pseudonym": (
                self.pseudonym("user", actor.username)
                if actor is not None and actor.kind == "user"
                else None
            ),
            "trace_id": current_trace_id(),
            "page": str(where)[:100] if where is not None else None,
        }
        with self._lock:
            if len(self._pending) >= self.max_pending:
                del self._pending[0]
                self.dropped += 1
                full = True
            else:
                full = False
            self._pending.append(row)
        if full:
            log.warning("tracking backlog full: oldest event dropped", pending=self.max_pending)
        self.db.write_behind(WRITE_KEY, self._writer())

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the events queued so far are written (or failed); False on timeout."""
        return self.db.flush_behind(timeout_s)

    def pending(self) -> int:
        """Events queued and not yet handed to a transaction."""
        with self._lock:
            return len(self._pending)

    def _props(self, props: Mapping[str, Any] | None) -> dict[str, Any]:
        if not props:
            return {}
        # Plain JSON now, so a value the database cannot store fails here (this event only)
        # rather than in the batch insert (every event of the batch).
        text = json.dumps(dict(props), default=str)
        if len(text) > MAX_PROPS_CHARS:
            raise ValueError(f"event props are {len(text)} characters; at most {MAX_PROPS_CHARS}")
        masked: dict[str, Any] = self._masker.value(json.loads(text))
        return masked

    def _writer(self) -> Callable[[UnitOfWork], None]:
        # A closure per call: write-behind runs only the newest one per key, which takes every
        # event pending by then. The batch it took is kept for run_tx's retries of it.
        taken: list[dict[str, Any]] | None = None

        def write(uow: UnitOfWork) -> None:
            nonlocal taken
            if taken is None:
                with self._lock:
                    taken, self._pending = self._pending, []
            if taken:
                uow.session.execute(insert(Event), taken)

        return write


_tracker: Tracker | None = None


def install_tracker(tracker: Tracker | None) -> None:
    """Make ``tracker`` the one ``track`` uses in this process (None: track nothing)."""
    global _tracker
    _tracker = tracker


def current_tracker() -> Tracker | None:
    """The tracker ``track`` uses, if one is installed."""
    return _tracker


def track(
    event: str,
    props: Mapping[str, Any] | None = None,
    *,
    actor: Principal | None = None,
    page: str | None = None,
) -> None:
    """Record that ``event`` happened (for ``actor``, on ``page``); never raises.

    The trace id, and the page if not given, come from the logging context. A failure is
    logged and the event dropped: tracking must not break what it watches.
    """
    tracker = _tracker
    if tracker is None:
        return
    try:
        tracker.record(event, props, actor=actor, page=page)
    except Exception as err:
        log.warning("event not tracked", tracked=event[:120], error=f"{type(err).__name__}: {err}")
