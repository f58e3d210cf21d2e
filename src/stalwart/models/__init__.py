"""SQLAlchemy tables and domain types. Import ``Base.metadata`` from here to see every table."""

from stalwart.models.audit import AuditEntry
from stalwart.models.base import Base
from stalwart.models.form import FormDraft, FormVersion, StoredFile
from stalwart.models.idempotency import IdempotencyKey
from stalwart.models.job import JobRecord
from stalwart.models.project import Project
from stalwart.models.session import SessionRecord

__all__ = [
    "AuditEntry",
    "Base",
    "FormDraft",
    "FormVersion",
    "IdempotencyKey",
    "JobRecord",
    "Project",
    "SessionRecord",
    "StoredFile",
]
