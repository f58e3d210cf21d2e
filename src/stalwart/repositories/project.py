"""Projects repository."""

from __future__ import annotations

from stalwart.models import Project
from stalwart.repositories.base import Repository


class ProjectRepository(Repository[Project]):
    """Audited CRUD for projects."""

    model = Project
    entity = "project"

    def find_by_name(self, name: str) -> Project | None:
        """The project with this name, or None."""
        return self.session.query(Project).filter_by(name=name).one_or_none()
