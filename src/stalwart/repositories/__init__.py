"""Repositories: one per aggregate, all on the generic ``Repository[T]``."""

from stalwart.repositories.base import Repository
from stalwart.repositories.form import DraftRepository, FormVersionRepository, StoredFileRepository
from stalwart.repositories.project import ProjectRepository

__all__ = [
    "DraftRepository",
    "FormVersionRepository",
    "ProjectRepository",
    "Repository",
    "StoredFileRepository",
]
