"""Form drafts (per browser identity) and saved form versions (shared by everyone)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import Base, TimestampedMixin, UTCDateTime, VersionedMixin, utcnow


class FormDraft(TimestampedMixin, VersionedMixin, Base):
    """What one browser has typed into one form, with its undo history; survives everything."""

    __tablename__ = "form_drafts"
    __table_args__ = (UniqueConstraint("session_id", "form_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("user_sessions.id", ondelete="CASCADE"), nullable=False
    )
    form_id: Mapped[str] = mapped_column(String(200), nullable=False)
    #: the FormState, serialised (data, history, cursor, base version, applied, field versions)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    #: the Streamlit session (tab) that wrote last, so other tabs can tell it was not them
    last_writer: Mapped[str] = mapped_column(String(64), nullable=False, default="")


class FormVersion(Base):
    """One saved version of a form; versions of a form are numbered 1, 2, 3, ..."""

    __tablename__ = "form_versions"
    __table_args__ = (UniqueConstraint("form_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    form_id: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    saved_by: Mapped[str] = mapped_column(String(200), nullable=False)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: the version this save replaced without having seen it (last write wins), if any
    overwrote: Mapped[int | None] = mapped_column(Integer, nullable=True)


class StoredFile(Base):
    """An uploaded file, kept in the database so a draft's attachment survives a restart."""

    __tablename__ = "stored_files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the content
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    mime: Mapped[str] = mapped_column(String(100), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
