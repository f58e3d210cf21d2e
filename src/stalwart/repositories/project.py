"""Projects repository."""

from __future__ import annotations

from sqlalchemy import func, select

from stalwart.models import Project
from stalwart.repositories.base import Repository


class ProjectRepository(Repository[Project]):
    """Audited CRUD for projects."""

    model = Project
    entity = "project"
    cache_namespace = "projects"

    def overview(self) -> list[dict[str, object]]:
        """Per status: how many projects and their budget, as JSON (what the home page shows)."""
        rows = self.session.execute(
            select(Project.status, func.count(), func.coalesce(func.sum(Project.budget), 0))
            .group_by(Project.status)
            .order_by(Project.status)
        ).all()
        return [
            {"status": status, "projects": int(count), "budget": float(budget)}
            for status, count, budget in rows
        ]

    def find_by_name(self, name: str) -> Project | None:
        """The project with this name, or None."""
        return self.session.query(Project).filter_by(name=name).one_or_none()
