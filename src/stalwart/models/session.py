"""Browser sessions: one row per identity cookie, holding where the user was."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import Base, UTCDateTime, utcnow


class SessionRecord(Base):
    """A browser's identity (the SHA-256 of its cookie, never the cookie) and its place."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    page: Mapped[str] = mapped_column(String(100), nullable=False, default="home")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
