"""Structured logging: one JSON object per line on stdout, with a trace id per interaction.

The trace id lives in a context variable (structlog's contextvars), so everything logged while
handling one interaction, one CLI command or one job carries the same id.
"""

from __future__ import annotations

import logging
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

_configured = False


def configure_logging(
    level: str = "INFO", *, json: bool = True, stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logging to ``stream`` (stdout) as JSON lines (or text)."""
    global _configured
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _ensure_trace_id,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
    _configured = True


def _ensure_trace_id(
    _logger: Any, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event.setdefault("trace_id", None)
    return event


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger named after its module."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def new_trace_id() -> str:
    """A fresh, random trace id (32 hex characters, W3C trace-context sized)."""
    return uuid.uuid4().hex


def current_trace_id() -> str | None:
    """The trace id bound to this context, if any."""
    value = structlog.contextvars.get_contextvars().get("trace_id")
    return str(value) if value is not None else None


@contextmanager
def trace(trace_id: str | None = None, **context: Any) -> Iterator[str]:
    """Bind a trace id (new unless given) and extra context for the duration of a block."""
    tid = trace_id or new_trace_id()
    with structlog.contextvars.bound_contextvars(trace_id=tid, **context):
        yield tid


def log_error(err: BaseException, ctx: Mapping[str, Any] | None = None) -> str:
    """Log ``err`` with its stack trace and context; return an error id to show the user."""
    error_id = uuid.uuid4().hex[:12]
    stack = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    get_logger("stalwart.errors").error(
        "error",
        error_id=error_id,
        error_type=type(err).__name__,
        error=str(err),
        stack=stack,
        **dict(ctx or {}),
    )
    return error_id
