"""SQLAlchemy tables and domain types. Import ``Base.metadata`` from here to see every table."""

from stalwart.models.audit import AuditEntry
from stalwart.models.base import Base
from stalwart.models.form import FormDraft, FormVersion, StoredFile
from stalwart.models.idempotency import IdempotencyKey
from stalwart.models.job import JobRecord
from stalwart.models.project import Project
from stalwart.models.session import SessionRecord
from stalwart.models.system import ErrorReport, MetricSample
from stalwart.models.tracking import Deployment, Event
from stalwart.models.user import LoginSession, LoginThrottle, User

__all__ = [
    "AuditEntry",
    "Base",
    "Deployment",
    "ErrorReport",
    "Event",
    "FormDraft",
    "FormVersion",
    "IdempotencyKey",
    "JobRecord",
    "LoginSession",
    "LoginThrottle",
    "MetricSample",
    "Project",
    "SessionRecord",
    "StoredFile",
    "User",
]
