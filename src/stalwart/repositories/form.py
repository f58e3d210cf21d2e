"""Repositories of the form write path: drafts, saved versions, stored files."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stalwart.models import FormDraft, FormVersion, StoredFile
from stalwart.repositories.base import Repository


class DraftRepository(Repository[FormDraft]):
    """Drafts: working state, written on every change, so not audited (saves are)."""

    model = FormDraft
    entity = "form_draft"
    audited = False

    def find(self, session_id: str, form_id: str, *, for_update: bool = False) -> FormDraft | None:
        """The draft of ``form_id`` for this browser identity, locked if ``for_update``."""
        query = select(FormDraft).filter_by(session_id=session_id, form_id=form_id)
        if for_update:
            query = query.with_for_update()
        return self.session.execute(query).scalar_one_or_none()


class FormVersionRepository(Repository[FormVersion]):
    """Saved versions of forms; the audit row of a save is written by the form service."""

    model = FormVersion
    entity = "form_version"
    audited = False

    def head(self, form_id: str) -> FormVersion | None:
        """The newest saved version of ``form_id``."""
        query = select(FormVersion).filter_by(form_id=form_id).order_by(FormVersion.version.desc())
        return self.session.execute(query.limit(1)).scalar_one_or_none()

    def at(self, form_id: str, version: int) -> FormVersion | None:
        """Version ``version`` of ``form_id``."""
        query = select(FormVersion).filter_by(form_id=form_id, version=version)
        return self.session.execute(query).scalar_one_or_none()


class StoredFileRepository(Repository[StoredFile]):
    """Uploaded files, addressed by the SHA-256 of their content (stored once)."""

    model = StoredFile
    entity = "stored_file"

    def put(self, file_id: str, **values: Any) -> StoredFile:
        """Store the file unless the same content is stored already."""
        existing = self.get(file_id)
        return existing if existing is not None else self.create(id=file_id, **values)
