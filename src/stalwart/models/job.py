"""The ``jobs`` table: the single source of truth of every background job.

Workers write status, progress, result and heartbeats here; the UI and the CLI read only this
table, never a worker or a broker. The status machine lives in ``stalwart.core.jobs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import Base, UTCDateTime, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelling", "cancelled", "retrying")


class JobRecord(Base):
    """One background job: what to run, and everything known about how it is going."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelling', "
            "'cancelled', 'retrying')",
            name="status",
        ),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        # What a worker looks for: claimable jobs by priority, then age.
        Index("ix_jobs_claim", "status", "priority", "created_at"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    #: "package.module:qualname" of a function registered with @job_function
    function: Mapped[str] = mapped_column(String(300), nullable=False)
    args: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    owner: Mapped[str] = mapped_column(String(200), nullable=False)
    #: higher runs first
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    timeout_s: Mapped[float] = mapped_column(Float, nullable=False)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    trace_id: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    #: for people: what went wrong, in a sentence
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: for operators: the traceback
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: when the job was last handed to the engine (enqueue, retry, re-queue)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: when the sweeper last found this waiting job's dispatch still waiting in the engine, or
    #: dispatched it again (a lost one); ``queued_at`` stays when it joined the queue, so the
    #: queue's age is real
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: a retrying job is not claimed before this (exponential backoff)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: embedded or rq: which engine runs it
    engine: Mapped[str] = mapped_column(String(20), nullable=False)
