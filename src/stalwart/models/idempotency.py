"""Idempotency keys: the first result of a write, returned again when the key is replayed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import Base, UTCDateTime, utcnow


class IdempotencyKey(Base):
    """A write that has committed, keyed by its client-generated idempotency key."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
