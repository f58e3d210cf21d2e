"""Repositories: one per aggregate, all on the generic ``Repository[T]``."""

from stalwart.repositories.base import Repository
from stalwart.repositories.form import DraftRepository, FormVersionRepository, StoredFileRepository
from stalwart.repositories.project import ProjectRepository
from stalwart.repositories.tracking import DeploymentRepository, EventRepository
from stalwart.repositories.user import LoginSessionRepository, ThrottleRepository, UserRepository

__all__ = [
    "DeploymentRepository",
    "DraftRepository",
    "EventRepository",
    "FormVersionRepository",
    "LoginSessionRepository",
    "ProjectRepository",
    "Repository",
    "StoredFileRepository",
    "ThrottleRepository",
    "UserRepository",
]
