"""The System page's history: ``metric_samples`` (aggregates over time) and ``error_reports``.

A metric sample is one row per app process every ``STALWART_METRICS_SAMPLE_INTERVAL_S``: what
that process measured since its previous sample (interactions and their p95, errors, database
retries, jobs) and its sessions at that moment. Single-machine installs have no Prometheus; this
is the history their System page draws, and it survives restarts.

An error report is what ``log_error`` logged (error id, type, message, stack, context, trace
id), stored so that an administrator can look an error id up on the System page. The stack
and the context are PII-masked exactly as the log line is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.audit import BigId
from stalwart.models.base import Base, UTCDateTime


class MetricSample(Base):
    """What one process measured over one sampling interval."""

    __tablename__ = "metric_samples"
    __table_args__ = (Index("ix_metric_samples_ts", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the end of the interval
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: ``host:pid`` of the process
    instance: Mapped[str] = mapped_column(String(255), nullable=False)
    #: the interval's length in seconds (the first sample of a process covers its start)
    interval_s: Mapped[float] = mapped_column(Float, nullable=False)
    interactions: Mapped[int] = mapped_column(Integer, nullable=False)
    #: estimated from the histogram's bucket increases (None: no interaction)
    interaction_p95_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    page_switches: Mapped[int] = mapped_column(Integer, nullable=False)
    errors: Mapped[int] = mapped_column(Integer, nullable=False)
    transactions: Mapped[int] = mapped_column(Integer, nullable=False)
    db_retries: Mapped[int] = mapped_column(Integer, nullable=False)
    db_failures: Mapped[int] = mapped_column(Integer, nullable=False)
    jobs_run: Mapped[int] = mapped_column(Integer, nullable=False)
    jobs_failed: Mapped[int] = mapped_column(Integer, nullable=False)
    #: browser tabs connected to the process when the sample was taken
    sessions: Mapped[int] = mapped_column(Integer, nullable=False)


class ErrorReport(Base):
    """One error reported with an error id (``log_error``), masked as its log line."""

    __tablename__ = "error_reports"
    __table_args__ = (Index("ix_error_reports_ts", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the id the user was shown
    error_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    error_type: Mapped[str] = mapped_column(String(200), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    stack: Mapped[str] = mapped_column(Text, nullable=False)
    #: the context ``log_error`` was given (page, component, ...), masked
    context: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: ``host:pid`` of the process that reported it
    instance: Mapped[str] = mapped_column(String(255), nullable=False)
