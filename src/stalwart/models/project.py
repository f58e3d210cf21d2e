"""Projects: the demo aggregate the reference app edits."""

from __future__ import annotations

from datetime import date

from sqlalchemy import CheckConstraint, Date, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import Base, TimestampedMixin, VersionedMixin

PROJECT_STATUSES = ("planned", "active", "done")


class Project(TimestampedMixin, VersionedMixin, Base):
    """A project with a budget and a due date."""

    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("status IN ('planned', 'active', 'done')", name="status"),
        CheckConstraint("budget >= 0", name="budget_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    budget: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="planned")
    due_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    owner: Mapped[str] = mapped_column(String(200), nullable=False, default="")
