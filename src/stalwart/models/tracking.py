"""Product tracking and deploy markers: the ``events`` and ``deployments`` tables.

An event says that something happened in a user's journey (a page shown, a form saved, a job
started, an export made). It holds keyed pseudonyms of the session and the user, never a
username or a session id: the table can be read for funnels without telling who anyone is.

A deployment is one start of an app process: what version and commit it ran, at which schema
revision, on which host. Kept apart from events so that the two have their own retention (events
may be pruned; the deploy history is what incidents are tied to) and typed columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.audit import BigId
from stalwart.models.base import Base, UTCDateTime, utcnow


class Event(Base):
    """One step of a user's journey: what, when, in which session, by whom (pseudonyms)."""

    __tablename__ = "events"
    __table_args__ = (
        # Time windows (the dashboard, pruning) and funnels (one name within a window).
        Index("ix_events_ts", "ts"),
        Index("ix_events_name_ts", "name", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: when it happened (taken when ``track`` was called, not when the row was written)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    #: what happened, dotted: ``page.view``, ``form.save``, ``job.start``, ``data.export``
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    props: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    #: keyed pseudonym of the session (funnels count distinct ones)
    session: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: keyed pseudonym of the user, never the username
    user_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the page's slug, where the event is tied to one
    page: Mapped[str | None] = mapped_column(String(100), nullable=True)


class Deployment(Base):
    """One start of an app process: the code and schema it ran with."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, index=True
    )
    version: Mapped[str] = mapped_column(String(50), nullable=False)
    #: the git commit (``STALWART_COMMIT``, else ``git rev-parse HEAD``, else "unknown")
    commit: Mapped[str] = mapped_column(String(64), nullable=False)
    #: the database's schema revision once the process had started (None: not migrated)
    migration_head: Mapped[str | None] = mapped_column(String(32), nullable=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
