"""Structured logging: one JSON object per line on stdout, with a trace id per interaction.

The trace id lives in a context variable (structlog's contextvars), so everything logged while
handling one interaction, one CLI command or one job carries the same id; a span id names the
unit of work inside it (a script run, a fragment run, a job attempt, an HTTP request).

Every line has the same keys (``LINE_FIELDS``; a key that does not apply is null), and foreign
records (Streamlit's loggers, uvicorn, ``warnings``, uncaught exceptions) go through the same
chain, so an operator can parse every line of the output the same way.

Personal data and secrets are hidden by a processor in the chain that every line passes
(ours, foreign stdlib records and ``log_error`` reports alike), after exceptions are formatted
to text, so a traceback is masked like any other value; see ``stalwart.core.pii``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, TextIO

import structlog

from stalwart import __version__
from stalwart.core.pii import Mode, PIIMasker

_configured = False
#: the keys of every line, in this order first; a key that does not apply is null
LINE_FIELDS: Final = (
    "ts",
    "level",
    "event",
    "logger",
    "trace_id",
    "span_id",
    "session",
    "page",
    "user",
    "version",
)
#: what an interaction binds (and unbinds at the end of its script run)
_INTERACTION_KEYS: Final = ("trace_id", "span_id", "session", "page", "user")
#: loggers of the libraries under us that keep their own handlers; ours takes them over
FOREIGN_LOGGERS: Final = (
    "streamlit",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "starlette",
    "tornado",
    "tornado.access",
    "tornado.application",
    "tornado.general",
    "websockets",
    "py.warnings",
)
_W3C_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
#: True inside the outermost interaction block of this context (nested blocks only join it)
_in_interaction: ContextVar[bool] = ContextVar("stalwart_in_interaction", default=False)
#: the logger ``log_error`` reports to (the metrics count its records by ``error_type``)
ERRORS_LOGGER: Final = "stalwart.errors"
#: keys our own chain sets (nothing personal in them, and they are on every line), and the
#: formatter's own entries (``_record`` is the LogRecord, removed before rendering)
_UNMASKED: Final = frozenset(
    {
        "ts",
        "level",
        "logger",
        "trace_id",
        "span_id",
        "session",
        "user",
        "version",
        "error_id",
        "_record",
        "_from_structlog",
    }
)


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = True,
    stream: TextIO | None = None,
    pii_mode: Mode = "mask",
    pii_key: str | bytes | None = None,
) -> None:
    """Send structlog and stdlib logging to ``stream`` (stdout) as JSON lines (or text).

    Personal data is masked (``pii_mode="mask"``) or pseudonymised with ``pii_key``
    (``"hash"``) in every line.
    """
    global _configured
    pii_keys, secret_keys = _marked_fields()
    masker = PIIMasker(pii_mode, pii_key, pii_keys=pii_keys, secret_keys=secret_keys)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        UserPseudonym(masker),
        complete_fields,
        # Exceptions and stacks become text here, so that the masker sees them.
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        PIIProcessor(masker),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # filter_by_level first: a debug line at INFO costs one level check, not the chain
        # (the PII masker included). Foreign records were filtered by logging already.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    capture_foreign_logs()
    _configured = True


def logging_configured() -> bool:
    """True once ``configure_logging`` ran in this process."""
    return _configured


def capture_foreign_logs() -> None:
    """Send foreign loggers, warnings and uncaught exceptions through our chain (idempotent).

    Streamlit's and uvicorn's loggers get their own text handlers and stop propagating; here
    they lose those handlers and propagate to ours. Streamlit makes a logger per module as the
    module is imported: if Streamlit is imported already, its ``setup_formatter`` is replaced
    so that those later loggers propagate too (call again after importing Streamlit).
    """
    for name in FOREIGN_LOGGERS:
        _adopt(logging.getLogger(name))
    uvicorn_config = sys.modules.get("uvicorn.config")
    if uvicorn_config is not None:
        # uvicorn.Config applies this dictConfig when the server starts (after us): its
        # loggers are to keep no handler of their own and propagate to ours.
        for name, settings in uvicorn_config.LOGGING_CONFIG.get("loggers", {}).items():
            settings.update(handlers=[], propagate=True)
            _adopt(logging.getLogger(name))
    st_logger = sys.modules.get("streamlit.logger")
    if st_logger is not None:
        for logger in list(getattr(st_logger, "_loggers", {}).values()):
            _adopt(logger)
        st_logger.setup_formatter = _adopt  # type: ignore[attr-defined]
    # Off then on: on alone does nothing if it was on once and warnings.showwarning changed since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def _adopt(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def _log_uncaught(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, err, tb)
        return
    logging.getLogger("stalwart.uncaught").critical("uncaught exception", exc_info=(kind, err, tb))


def _log_unraisable(args: Any) -> None:
    # "Exception ignored in ...": an error in a finalizer or an at-fork hook (a signal landing
    # in a forked work horse's random.seed, say), which Python would print as text on stderr.
    if args.exc_type is None:
        return
    logging.getLogger("stalwart.uncaught").warning(
        "exception ignored in %r",
        args.object,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "unknown"
    logging.getLogger("stalwart.uncaught").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def complete_fields(
    _logger: Any, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every key of ``LINE_FIELDS`` on every line (null when it does not apply), first."""
    event.setdefault("version", __version__)
    ordered = {key: event.get(key) for key in LINE_FIELDS}
    ordered.update(event)
    return ordered


class UserPseudonym:
    """The ``user`` of a line as a keyed pseudonym (``user:<12 hex>``), never the name itself.

    The same pseudonym as the tracking events' ``user_pseudonym`` (same key and kind), so a
    user's log lines and journeys can be matched without knowing who it is.
    """

    def __init__(self, masker: PIIMasker) -> None:
        self.masker = masker

    def __call__(
        self, _logger: Any, _name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        user = event.get("user")
        if user is not None and not (isinstance(user, str) and user.startswith("user:")):
            event["user"] = self.masker.pseudonym("user", str(user))
        return event


class PIIProcessor:
    """The structlog processor that hides PII in every value of an event (see ``core.pii``)."""

    def __init__(self, masker: PIIMasker) -> None:
        self.masker = masker

    def __call__(
        self, _logger: Any, _name: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        field = self.masker.field
        for key, value in event.items():
            if key not in _UNMASKED:
                event[key] = field(key, value)
        return event


def _marked_fields() -> tuple[frozenset[str], frozenset[str]]:
    # Imported here, not at the top: the models import SQLAlchemy, and logging is configured
    # once, after everything is imported.
    import stalwart.models  # noqa: F401 - registers every table on Base
    from stalwart.models.base import marked_fields

    return marked_fields()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger named after its module."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def new_trace_id() -> str:
    """A fresh, random trace id (32 hex characters, W3C trace-context sized)."""
    return uuid.uuid4().hex


def new_span_id() -> str:
    """A fresh, random span id (16 hex characters, W3C trace-context sized)."""
    return uuid.uuid4().hex[:16]


def current_trace_id() -> str | None:
    """The trace id bound to this context, if any."""
    value = structlog.contextvars.get_contextvars().get("trace_id")
    return str(value) if value is not None else None


@contextmanager
def trace(trace_id: str | None = None, **context: Any) -> Iterator[str]:
    """Bind a trace id (new unless given), a new span id and extra context for a block."""
    tid = trace_id or new_trace_id()
    context.setdefault("span_id", new_span_id())
    with structlog.contextvars.bound_contextvars(trace_id=tid, **context):
        yield tid


def ensure_trace(**context: Any) -> str:
    """The bound trace id; if none, bind a new one (and a span id, and ``context``) and return it.

    For the first code of an interaction that is not inside a block (a widget's callback runs
    before the script body): the body's ``interaction`` block adopts and later unbinds it.
    """
    bound = current_trace_id()
    if bound is not None:
        return bound
    tid = new_trace_id()
    structlog.contextvars.bind_contextvars(trace_id=tid, span_id=new_span_id(), **context)
    return tid


@contextmanager
def interaction(**context: Any) -> Iterator[str]:
    """One interaction (a script run, a fragment rerun): its trace id for the block.

    A trace id already bound by the run's callbacks is reused, else a new one is bound; the
    span id is kept likewise. ``context`` (page, session, user) is bound on top. The outermost
    block unbinds it all at the end, so the next run on the same thread starts clean; a nested
    block (a fragment inside a full run) joins the outer one and only adds its context.
    """
    if _in_interaction.get():
        with structlog.contextvars.bound_contextvars(**context):
            yield current_trace_id() or ensure_trace()
        return
    token = _in_interaction.set(True)
    try:
        tid = ensure_trace()
        structlog.contextvars.bind_contextvars(**context)
        yield tid
    finally:
        structlog.contextvars.unbind_contextvars(*_INTERACTION_KEYS, *context)
        _in_interaction.reset(token)


def traceparent() -> str:
    """A W3C ``traceparent`` header value for an outbound request of the current trace.

    The bound trace id when it has the W3C form (ours always has), else a new one; the parent
    id is a new span for this request.
    """
    tid = current_trace_id()
    if tid is None or not _W3C_TRACE_ID.fullmatch(tid):
        tid = new_trace_id()
    return f"00-{tid}-{new_span_id()}-01"


def log_error(err: BaseException, ctx: Mapping[str, Any] | None = None) -> str:
    """Log ``err`` with its stack trace and context; return an error id to show the user.

    The line carries the interaction's trace id, so the id a user reports leads to the trace:
    its other log lines, its audit rows and the jobs it enqueued (see OPERATIONS.md).
    """
    error_id = new_error_id()
    get_logger(ERRORS_LOGGER).error("error", **error_fields(err, error_id, ctx))
    return error_id


def new_error_id() -> str:
    """A fresh error id (12 hex characters: short enough to read out over the phone)."""
    return uuid.uuid4().hex[:12]


def error_fields(
    err: BaseException, error_id: str, ctx: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What an error line holds: its id, type, message, full stack trace and ``ctx``."""
    stack = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {
        "error_id": error_id,
        "error_type": type(err).__name__,
        "error": str(err),
        "stack": stack,
        **dict(ctx or {}),
    }
