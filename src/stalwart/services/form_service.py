"""The form write path: ``widget -> FormState -> Repository -> UnitOfWork -> DB``.

Every change is one operation on the draft, applied under the draft's row lock inside
``run_tx``: load the FormState, apply, write back. Field-level operations mean two tabs that
edit different fields never undo each other. Saves number the versions of a form 1, 2, 3, ...
under a per-form lock; a save based on an older version than the newest still wins (last write
wins) and records which version it replaced, and whoever's draft is based on the replaced
version sees a conflict until they keep theirs or take the other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from stalwart.core.access import AccessControl
from stalwart.core.database import DB, RetryNotice, RetryPolicy, UnitOfWork
from stalwart.core.form_state import FormState, JournalEntry
from stalwart.core.logs import get_logger
from stalwart.core.rbac import APPLY_FORM, SAVE_FORM, Principal
from stalwart.core.tracking import FORM_APPLY, FORM_SAVE, track
from stalwart.errors import InputRejectedError, NotFoundError
from stalwart.models import FormDraft
from stalwart.repositories import DraftRepository, FormVersionRepository, StoredFileRepository
from stalwart.services.input_rules import InputLimits, clean_input
from stalwart.services.uploads import check_upload

T = TypeVar("T")
log = get_logger(__name__)
_FILE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FormView:
    """What the UI needs after an operation: the state and where it stands against saves."""

    state: FormState
    head_version: int
    head_data: dict[str, Any] | None
    head_saved_by: str | None
    last_writer: str

    @property
    def conflict(self) -> bool:
        """Someone saved a version this draft has not seen, with other values."""
        return (
            self.head_version > self.state.base_version
            and self.head_data is not None
            and self.head_data != self.state.data
        )

    @property
    def behind(self) -> bool:
        """A newer saved version exists (with or without different values)."""
        return self.head_version > self.state.base_version


@dataclass(frozen=True)
class SaveOutcome:
    """A committed save: its version, and the version it replaced unseen, if any."""

    version: int
    overwrote: int | None


class FormService:
    """Operations on forms, each one transaction."""

    def __init__(
        self,
        db: DB,
        *,
        retry: RetryPolicy | None = None,
        access: AccessControl | None = None,
    ) -> None:
        self.db = db
        self.retry = retry
        #: who may Save and Apply (the built-in roles unless the app passes its own)
        self.access = access or AccessControl(db)

    def load(self, session_id: str, form_id: str, defaults: Mapping[str, Any]) -> FormView:
        """The current view of ``form_id`` for this identity (a read: creates nothing)."""
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                draft = DraftRepository(uow).find(session_id, form_id)
                state = (
                    FormState.from_json(form_id, draft.state)
                    if draft
                    else self._fresh(uow, form_id, defaults)
                )
                return self._view(uow, state, draft)
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc

    def open(
        self, session_id: str, form_id: str, defaults: Mapping[str, Any], *, tab: str = ""
    ) -> FormView:
        """The view of ``form_id`` for this identity, with its draft pinned to what is shown.

        A tab that shows version N must edit version N: without a stored draft, the first
        change would start from whatever version is newest by then, and silently take in
        values the user never saw.
        """

        def work(uow: UnitOfWork) -> FormView:
            repo = DraftRepository(uow)
            draft = repo.find(session_id, form_id)
            if draft is not None:
                return self._view(uow, FormState.from_json(form_id, draft.state), draft)
            state = self._fresh(uow, form_id, defaults)
            draft = repo.create(
                session_id=session_id, form_id=form_id, state=state.to_json(), last_writer=tab
            )
            return self._view(uow, state, draft)

        return self.db.run_tx(work, retry=self.retry)

    def apply(
        self,
        session_id: str,
        form_id: str,
        defaults: Mapping[str, Any],
        op: Callable[[FormState], T],
        *,
        tab: str = "",
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> tuple[FormView, T]:
        """Apply ``op`` to the stored draft under its row lock and store the result."""

        def work(uow: UnitOfWork) -> tuple[FormView, T]:
            state, draft = self._locked_state(uow, session_id, form_id, defaults)
            before = state.to_json()
            result = op(state)
            draft = self._store(uow, session_id, form_id, state, draft, before, tab)
            return self._view(uow, state, draft), result

        return self.db.run_tx(work, on_retry=on_retry, retry=self.retry)

    #: what users may type and upload; ``with_limits`` sets the app's (else AppConfig's defaults)
    limits: InputLimits = InputLimits()

    def with_limits(self, limits: InputLimits) -> FormService:
        """This service, checking input against ``limits`` (the app's configured ones)."""
        self.limits = limits
        return self

    def persist_input(
        self,
        session_id: str,
        form_id: str,
        defaults: Mapping[str, Any],
        field: str,
        value: Any,
        *,
        typed: bool = False,
        tab: str = "",
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> FormView:
        """Store one field's new value in the draft, made storable first.

        NULs are removed and lone surrogates replaced (``input_rules.clean_input``); a text
        longer than ``limits.input_max_chars`` or a non-finite number raises
        ``InputRejectedError`` before anything is written, so the draft keeps the previous
        value. HTML, Markdown and SQL metacharacters are stored verbatim.
        """
        clean = clean_input(field, value, max_chars=self.limits.input_max_chars).value
        view, _ = self.apply(
            session_id,
            form_id,
            defaults,
            lambda s: s.set_field(field, clean, typed=typed),
            tab=tab,
            on_retry=on_retry,
        )
        return view

    def replay_journal(
        self,
        session_id: str,
        form_id: str,
        defaults: Mapping[str, Any],
        entries: Mapping[str, JournalEntry],
        *,
        tab: str = "",
    ) -> tuple[FormView, list[str]]:
        """Take the browser's journalled values that are newer than the server's.

        Each value is made storable as ``persist_input`` does; one that cannot be (too long)
        is left out, so the draft keeps that field's value (the browser keeps its journal
        entry, and the form tells the user, see ``widgets.forms``).
        """
        usable: dict[str, JournalEntry] = {}
        for name, entry in entries.items():
            try:
                value = clean_input(name, entry.value, max_chars=self.limits.input_max_chars)
            except InputRejectedError as err:
                log.warning("journal value refused", field=name, reason=err.reason)
                continue
            usable[name] = JournalEntry(value.value, entry.base)
        return self.apply(session_id, form_id, defaults, lambda s: s.merge_journal(usable), tab=tab)

    def save(
        self,
        session_id: str,
        form_id: str,
        defaults: Mapping[str, Any],
        *,
        actor: Principal,
        idempotency_key: str,
        tab: str = "",
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> SaveOutcome:
        """Commit the draft as the form's next version, audited; replaying the key is a no-op.

        Needs ``edit_forms``: a refusal is audited and raised, and the draft stays as it is.
        """
        self.access.authorize(actor, SAVE_FORM, entity="form", entity_id=form_id)
        user = actor.username

        def work(uow: UnitOfWork) -> dict[str, Any]:
            uow.lock(f"form:{form_id}")
            state, draft = self._locked_state(uow, session_id, form_id, defaults)
            before = state.to_json()
            versions = FormVersionRepository(uow)
            head = versions.head(form_id)
            head_version = head.version if head else 0
            version = head_version + 1
            overwrote = head_version if head_version > state.base_version else None
            versions.create(
                form_id=form_id,
                version=version,
                data=dict(state.data),
                saved_by=user,
                overwrote=overwrote,
            )
            previous = dict(head.data) if head else {}
            uow.audit.record(
                "save",
                "form",
                form_id,
                {**previous, "_version": head_version},
                {**state.data, "_version": version},
            )
            state.rebase(version, state.data)
            self._store(uow, session_id, form_id, state, draft, before, tab)
            # Once committed, and not again on an idempotent replay (which skips ``work``).
            props = {"form_id": form_id, "version": version, "overwrote": overwrote is not None}
            uow.after_commit(lambda: track(FORM_SAVE, props, actor=actor))
            return {"version": version, "overwrote": overwrote}

        result = self.db.run_tx(
            work, idempotency_key=idempotency_key, user=user, on_retry=on_retry, retry=self.retry
        )
        return SaveOutcome(int(result["version"]), result["overwrote"])

    def apply_form(
        self,
        session_id: str,
        form_id: str,
        defaults: Mapping[str, Any],
        *,
        actor: Principal,
        tab: str = "",
    ) -> FormView:
        """Apply the draft (the page computes with it; nothing is saved). Needs ``edit_forms``."""
        self.access.authorize(actor, APPLY_FORM, entity="form", entity_id=form_id)
        view, _ = self.apply(session_id, form_id, defaults, _mark_applied, tab=tab)
        track(FORM_APPLY, {"form_id": form_id}, actor=actor)
        return view

    def take_theirs(
        self, session_id: str, form_id: str, defaults: Mapping[str, Any], *, tab: str = ""
    ) -> FormView:
        """Resolve a conflict by making the newest saved version the draft (undoable)."""

        def work(uow: UnitOfWork) -> FormView:
            state, draft = self._locked_state(uow, session_id, form_id, defaults)
            before = state.to_json()
            head = FormVersionRepository(uow).head(form_id)
            if head is None:
                raise NotFoundError(f"Form {form_id} has no saved version to take.")
            state.rebase(head.version, head.data)
            draft = self._store(uow, session_id, form_id, state, draft, before, tab)
            return self._view(uow, state, draft)

        return self.db.run_tx(work, retry=self.retry)

    def store_file(
        self, name: str, mime: str, content: bytes, *, types: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Check and keep an uploaded file; returns what a draft stores about it.

        ``uploads.check_upload`` refuses (``UploadRejectedError``) a file over
        ``limits.upload_max_bytes``, of a type not in ``limits.upload_allowed_types`` (or the
        widget's ``types``), or whose content is not what its extension says. The name is
        sanitised and only ever a label: the file is stored under the SHA-256 of its content.
        The browser's ``mime`` is not trusted; the stored type follows the extension.
        """
        del mime  # claimed by the browser: the checked extension decides
        checked = check_upload(name, content, self.limits, widget_types=types)
        file_id = hashlib.sha256(content).hexdigest()

        def work(uow: UnitOfWork) -> None:
            StoredFileRepository(uow).put(
                file_id, name=checked.name, mime=checked.mime, size=checked.size, content=content
            )

        self.db.run_tx(work, retry=self.retry)
        return {
            "file_id": file_id,
            "name": checked.name,
            "size": checked.size,
            "mime": checked.mime,
        }

    def read_file(self, file_id: str) -> bytes:
        """The content of a stored file (``file_id`` is the SHA-256 ``store_file`` returned)."""
        if not _FILE_ID.fullmatch(file_id):
            raise NotFoundError(f"No stored file has the id {file_id[:80]!r}.")
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                return StoredFileRepository(uow).read(file_id).content
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc

    # --- internals -----------------------------------------------------------------------

    def _fresh(self, uow: UnitOfWork, form_id: str, defaults: Mapping[str, Any]) -> FormState:
        head = FormVersionRepository(uow).head(form_id)
        if head is None:
            return FormState.new(form_id, defaults, base_version=0)
        return FormState.new(form_id, {**defaults, **head.data}, base_version=head.version)

    def _locked_state(
        self, uow: UnitOfWork, session_id: str, form_id: str, defaults: Mapping[str, Any]
    ) -> tuple[FormState, FormDraft | None]:
        draft = DraftRepository(uow).find(session_id, form_id, for_update=True)
        if draft is not None:
            return FormState.from_json(form_id, draft.state), draft
        return self._fresh(uow, form_id, defaults), None

    def _store(
        self,
        uow: UnitOfWork,
        session_id: str,
        form_id: str,
        state: FormState,
        draft: FormDraft | None,
        before: dict[str, Any],
        tab: str,
    ) -> FormDraft | None:
        after = state.to_json()
        repo = DraftRepository(uow)
        if draft is None:
            if after == before:
                return None  # nothing changed: a view needs no row
            return repo.create(session_id=session_id, form_id=form_id, state=after, last_writer=tab)
        if after != before:
            repo.update(draft.id, state=after, last_writer=tab)
        return draft

    def _view(self, uow: UnitOfWork, state: FormState, draft: FormDraft | None) -> FormView:
        head = FormVersionRepository(uow).head(state.form_id)
        return FormView(
            state=state,
            head_version=head.version if head else 0,
            head_data=dict(head.data) if head else None,
            head_saved_by=head.saved_by if head else None,
            last_writer=draft.last_writer if draft else "",
        )


def _mark_applied(state: FormState) -> list[str]:
    state.apply()
    return []
