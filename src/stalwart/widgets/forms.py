"""Controlled forms: drafts that survive everything, Save / Apply / Reset, undo / redo,
a state indicator and a conflict panel.

The write path of every widget is ``st.session_state -> FormState -> Repository -> DB``
through ``persist_input(key, value)``. Text fields also travel through the browser journal
(``journal.js``): every keystroke is in localStorage before the next one, sent to Python
debounced, and replayed after a reload if the server never got it. When the database cannot be
reached, nothing is acknowledged: the journal keeps the keystrokes, the server keeps the other
changes in order, the indicator says "retrying", and the browser asks again every second until
the database answers; then everything lands once (each change is a field-level operation, so
applying it again changes nothing).

A form renders inside an ``st.fragment``: typing reruns the form, not the page. Nothing is
inserted above the fields (the indicator has a fixed line, conflicts open as a dialog,
messages are toasts and fixed-height captions), so the page does not jump.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import streamlit as st
from pydantic import BaseModel, ValidationError

from stalwart.bootstrap import current_app
from stalwart.core.database import RetryNotice, RetryPolicy
from stalwart.core.form_state import FormState, JournalEntry
from stalwart.core.logs import get_logger, log_error
from stalwart.core.session import UserSession
from stalwart.errors import DatabaseError, StalwartError
from stalwart.services.form_service import FormService, FormView

log = get_logger(__name__)

#: An interaction gives up on the database fast and lets the browser drive the retries.
UI_RETRY: Final = RetryPolicy(max_attempts=2, initial_s=0.02, max_s=0.05)
_RUNTIMES: Final = "_stalwart_forms"
_JOURNAL = st.components.v2.component(
    "stalwart.journal",
    js=(Path(__file__).with_name("journal.js")).read_text(encoding="utf-8"),
    isolate_styles=False,
)

# The journal has no visible part: keep its element container out of the layout.
HIDDEN_JOURNAL_CSS: Final = '[class*="st-key-swj-"]{display:none}'

Converter = Callable[[Any], Any]


@dataclass
class FormRuntime:
    """What one tab knows about one form between reruns (kept in ``st.session_state``)."""

    form_id: str
    slug: str
    defaults: dict[str, Any]
    session_id: str
    tab: str
    view: FormView | None = None
    last_item: int = 0
    pending: list[tuple[str, Any, bool]] = field(default_factory=list)
    save_key: str | None = None
    status: str = ""
    rerun_app: bool = False
    show_errors: bool = False
    show_conflict: bool = False
    retry_round: int = 0
    #: how a widget kind turns a widget value into a stored value, per field
    readers: dict[str, Converter] = field(default_factory=dict)
    #: how a stored value becomes a widget value, per field
    writers: dict[str, Converter] = field(default_factory=dict)
    #: fields whose values travel through the journal
    journalled: set[str] = field(default_factory=set)


def slug_of(form_id: str) -> str:
    """A form id made safe for widget keys and CSS classes."""
    return re.sub(r"[^A-Za-z0-9-]", "-", form_id)


def widget_key(slug: str, name: str) -> str:
    """The namespaced, stable key of a form field's widget: ``sw__<form>__<field>``."""
    return f"sw__{slug}__{name}"


def _runtimes() -> dict[str, FormRuntime]:
    runtimes: dict[str, FormRuntime] = st.session_state.setdefault(_RUNTIMES, {})
    return runtimes


def _service() -> FormService:
    return FormService(current_app().db, retry=UI_RETRY)


def persist_input(key: str, value: Any, *, typed: bool = False) -> bool:
    """Store the value of widget ``key`` in its form's draft; False if it had to be queued."""
    _prefix, slug, name = key.split("__", 2)
    rt = _runtimes()[slug]
    rt.pending.append((name, value, typed))
    return _flush_pending(rt)


def _flush_pending(rt: FormRuntime) -> bool:
    """Store queued changes in order; keep what the database refused for the next try."""
    while rt.pending:
        name, value, typed = rt.pending[0]
        try:
            rt.view = _service().persist_input(
                rt.session_id, rt.form_id, rt.defaults, name, value, typed=typed, tab=rt.tab
            )
        except DatabaseError as err:
            rt.status = "retrying"
            log.warning("draft change queued", form=rt.form_id, field=name, error=err.message)
            return False
        rt.pending.pop(0)
    rt.status = ""
    return True


class Form:
    """One form on a page, for one browser tab. Build it with ``open_form`` inside a fragment."""

    def __init__(
        self,
        rt: FormRuntime,
        session: UserSession,
        schema: type[BaseModel] | None,
    ) -> None:
        self.rt = rt
        self.session = session
        self.schema = schema
        self.errors: dict[str, str] = {}
        self._indicator: Any = None

    # --- what widgets use ---------------------------------------------------------------

    @property
    def view(self) -> FormView:
        """The current view of the form (state, and where it stands against saves)."""
        assert self.rt.view is not None
        return self.rt.view

    @property
    def state(self) -> FormState:
        """The draft's FormState."""
        return self.view.state

    def key(self, name: str) -> str:
        """The widget key of field ``name``."""
        return widget_key(self.rt.slug, name)

    def bind(
        self,
        name: str,
        *,
        to_widget: Converter = lambda v: v,
        from_widget: Converter = lambda v: v,
        journalled: bool = False,
    ) -> str:
        """Register field ``name`` and seed its widget from the draft; returns its key."""
        self.rt.writers[name] = to_widget
        self.rt.readers[name] = from_widget
        if journalled:
            self.rt.journalled.add(name)
        key = self.key(name)
        if key not in st.session_state:
            st.session_state[key] = to_widget(self.state.data.get(name))
        return key

    def on_change(self, name: str) -> None:
        """Widget callback: store the widget's new value.

        A text field's own commit (on blur or Enter) is typing as much as the journal's
        keystrokes are, so both count as one undo step.
        """
        key = self.key(name)
        value = self.rt.readers[name](st.session_state[key])
        persist_input(key, value, typed=name in self.rt.journalled)

    def message(self, name: str) -> None:
        """The field's validation message, in a line that is always there (no jumps).

        Shown once the field was changed or a save was tried: a fresh form does not nag.
        """
        touched = self.rt.show_errors or self.state.data.get(name) != self.rt.defaults.get(name)
        text = self.errors.get(name) if touched else None
        st.caption(f":red[{text}]" if text else "\u00a0")

    # --- the form's chrome ---------------------------------------------------------------

    def indicator(self) -> None:
        """A one-line state: saved / unsaved changes / saving / retrying / conflict.

        A conflict adds a "Resolve conflict…" button to the line. The dialog opens only when the
        user asks (or saves): a modal that opened by itself would take the keystrokes of
        someone in the middle of a sentence. The line has a fixed height, so nothing moves.
        """
        line = st.container(key=f"sws-{self.rt.slug}", height=44, border=False)
        left, right = line.columns([5, 2], vertical_alignment="center")
        self._indicator = left.empty()
        self._show_indicator()
        if self.view.conflict:
            right.button(
                "Resolve conflict…",
                key=f"swc__{self.rt.slug}__resolve",
                on_click=self._open_conflict,
                width="stretch",
            )

    def _show_indicator(self, override: str | None = None) -> None:
        if self._indicator is None:
            return
        label, colour = override_label(override) if override else self.status_label()
        self._indicator.badge(label, color=colour)

    def status_label(self) -> tuple[str, str]:
        """The indicator's text and colour for the current state."""
        if self.view.conflict:
            return "conflict: someone else saved a newer version", "red"
        if self.rt.status == "retrying" or self.rt.pending:
            return "retrying: the database is not answering, your input is kept", "orange"
        if self.state.dirty:
            return "unsaved changes (draft kept)", "blue"
        version = self.state.base_version
        return (f"saved (version {version})" if version else "saved (nothing to save)"), "green"

    def controls(self) -> None:
        """Save / Apply / Reset / Undo / Redo buttons."""
        state = self.state
        buttons: list[tuple[str, Callable[..., None], tuple[str, ...], bool, str | None]] = [
            ("Save", self._request_save, (), False, None),
            ("Apply", self._apply, (), False, None),
            ("Reset", self._op, ("reset",), not state.dirty, None),
            ("Undo", self._op, ("undo",), not state.can_undo, "Ctrl+Z"),
            ("Redo", self._op, ("redo",), not state.can_redo, "Ctrl+Shift+Z"),
        ]
        for col, (label, action, args, disabled, shortcut) in zip(
            st.columns(len(buttons), gap="small"), buttons, strict=True
        ):
            col.button(
                label,
                key=f"swc__{self.rt.slug}__{label.lower()}",
                type="primary" if label == "Save" else "secondary",
                on_click=action,
                args=args,
                disabled=disabled,
                help=shortcut,
                width="stretch",
            )
        if self.rt.save_key is not None:
            self._save()
        if self.view.conflict and self.rt.show_conflict:
            _conflict_dialog(self)
        elif not self.view.conflict:
            self.rt.show_conflict = False
        self._mount_journal()
        if self.rt.rerun_app:
            # Apply and Save change what the page computes: recompute the whole page once.
            self.rt.rerun_app = False
            st.rerun(scope="app")

    @property
    def journal_key(self) -> str:
        """The key of this form's journal component."""
        return f"swj-{self.rt.slug}"

    def _mount_journal(self) -> None:
        # Mounted after the widgets, so that it is told every journalled field and its value
        # from the first render on (a replay after a reload depends on it).
        rt = self.rt
        retry = bool(rt.pending) or rt.status == "retrying" or rt.save_key is not None
        # The component's code runs again only when its data changes: a new round number
        # makes each retry arm the next one.
        rt.retry_round = rt.retry_round + 1 if retry else 0
        _JOURNAL(
            key=self.journal_key,
            data={
                "form": rt.slug,
                "ns": self.session.id[:16],
                # A new server session (a restart, a reconnect) must be offered the journal
                # again: this tells the page's journal which session it talks to.
                "session": rt.tab,
                "revision": self.state.revision,
                "values": {k: _journal_value(self.state.data.get(k)) for k in rt.journalled},
                "acked": rt.last_item,
                "retry": retry,
                "round": rt.retry_round,
            },
            on_outbox_change=lambda: None,
            on_tick_change=lambda: None,
        )

    # --- operations ----------------------------------------------------------------------

    def _op(self, kind: str) -> None:
        ops: dict[str, Callable[[FormState], list[str]]] = {
            "undo": FormState.undo,
            "redo": FormState.redo,
            "reset": FormState.reset,
        }
        self.run(ops[kind])

    def run(self, op: Callable[[FormState], list[str]]) -> list[str] | None:
        """Apply an operation that may change several fields and update their widgets.

        Returns the changed fields, or None if the database could not be reached.
        """
        if not _flush_pending(self.rt):
            st.toast("The database is not answering; try again in a moment.", icon="⏳")
            return None
        try:
            self.rt.view, changed = _service().apply(
                self.rt.session_id, self.rt.form_id, self.rt.defaults, op, tab=self.rt.tab
            )
        except DatabaseError as err:
            self.rt.status = "retrying"
            st.toast(f"{err.message} {err.action}", icon="⏳")
            return None
        self._push_to_widgets(changed)
        return changed

    def _push_to_widgets(self, names: list[str]) -> None:
        for name in names:
            if name in self.rt.writers:
                st.session_state[self.key(name)] = self.rt.writers[name](self.state.data.get(name))

    def _apply(self) -> None:
        if self.run(_apply_draft) is not None:
            self.rt.rerun_app = True
            st.toast("Applied.", icon="✅")

    def _open_conflict(self) -> None:
        self.rt.show_conflict = True

    def _request_save(self) -> None:
        # Runs before the fields are drawn, so their messages show in this very run.
        self.rt.show_errors = True
        if self.view.conflict:
            # Saving over a version the user has not seen: show both first.
            self.rt.show_conflict = True
            return
        # One idempotency key per click: a save retried after a failure cannot land twice.
        if self.rt.save_key is None:
            self.rt.save_key = uuid.uuid4().hex

    def _save(self) -> None:
        if self.errors:
            self.rt.save_key = None
            self.rt.show_errors = True
            st.toast("Not saved: fix the fields marked below. Your input is kept.", icon="⚠️")
            return
        if not _flush_pending(self.rt):
            return  # still retrying the draft; the save request stays and runs after it
        self._show_indicator("saving")

        def retrying(notice: RetryNotice) -> None:
            self._show_indicator(f"retrying {notice.attempt}/{notice.max_attempts}")

        key = self.rt.save_key
        assert key is not None
        try:
            outcome = _service().save(
                self.rt.session_id,
                self.rt.form_id,
                self.rt.defaults,
                user=self.session.id[:12],
                idempotency_key=key,
                tab=self.rt.tab,
                on_retry=retrying,
            )
        except StalwartError as err:
            error_id = log_error(err, {"form": self.rt.form_id})
            self.rt.status = "retrying" if isinstance(err, DatabaseError) else ""
            st.toast(f"Not saved yet: {err.message} (error id {error_id})", icon="⏳")
            self._show_indicator()
            return
        self.rt.save_key = None
        self.rt.rerun_app = True
        self.rt.view, _ = _service().apply(
            self.rt.session_id, self.rt.form_id, self.rt.defaults, _apply_draft, tab=self.rt.tab
        )
        self._show_indicator()
        text = f"Saved as version {outcome.version}."
        if outcome.overwrote:
            text += f" It replaced version {outcome.overwrote}, saved meanwhile by someone else."
        st.toast(text, icon="💾")


def _apply_draft(state: FormState) -> list[str]:
    """Apply (push the draft into the page's computation); changes no field."""
    state.apply()
    return []


def override_label(override: str) -> tuple[str, str]:
    """Indicator text for a transient state shown while an operation runs."""
    if override.startswith("retrying"):
        return (
            f"retrying ({override.split()[1]}): the database is busy, your input is kept",
            "orange",
        )
    return "saving…", "gray"


@st.dialog("Someone else saved this form", width="large", dismissible=False)
def _conflict_dialog(form: Form) -> None:
    """Both versions side by side; the user keeps theirs or takes the other."""
    rt = form.rt
    view = form.view
    st.markdown(
        f"Version **{view.head_version}** was saved by **{view.head_saved_by}** after the "
        f"version your draft is based on (**{view.state.base_version}**). Nothing has been "
        "overwritten: choose which values to keep."
    )
    names = sorted(
        k
        for k in (view.head_data or {}).keys() | view.state.data.keys()
        if (view.head_data or {}).get(k) != view.state.data.get(k)
    )
    rows = [
        {
            "field": k,
            "yours": _short(view.state.data.get(k)),
            "theirs": _short((view.head_data or {}).get(k)),
        }
        for k in names
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    left, right = st.columns(2)
    if left.button("Keep mine", key=f"swc__{rt.slug}__keep", type="primary", width="stretch"):
        rt.save_key = rt.save_key or uuid.uuid4().hex  # last write wins, on purpose
        rt.show_conflict = False
        st.rerun(scope="app")
    if right.button("Take theirs", key=f"swc__{rt.slug}__take", width="stretch"):
        rt.view = _service().take_theirs(rt.session_id, rt.form_id, rt.defaults, tab=rt.tab)
        form._push_to_widgets(sorted(rt.writers))
        rt.show_conflict = False
        st.rerun(scope="app")


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "…"


def open_form(
    session: UserSession,
    form_id: str,
    *,
    defaults: Mapping[str, Any],
    schema: type[BaseModel] | None = None,
) -> Form:
    """Load the form for this tab and take what the browser sent.

    Call at the top of the form's fragment, before its widgets; end the form with
    ``form.controls()``, which also mounts the browser journal.
    """
    slug = slug_of(form_id)
    runtimes = _runtimes()
    rt = runtimes.get(slug)
    if rt is None or rt.session_id != session.id:
        rt = FormRuntime(form_id, slug, dict(defaults), session.id, session.tab)
        runtimes[slug] = rt
    form = Form(rt, session, schema)

    _flush_pending(rt)
    try:
        if rt.view is None:
            fresh = _service().open(session.id, form_id, rt.defaults, tab=rt.tab)
        else:
            fresh = _service().load(session.id, form_id, rt.defaults)
    except DatabaseError as err:
        rt.status = "retrying"
        if rt.view is None:
            raise StalwartError(f"The form cannot be loaded: {err.message}", err.action) from err
        fresh = rt.view
    _adopt_external_changes(form, fresh)
    _take_outbox(form, st.session_state.get(form.journal_key))

    form.errors = validate(schema, form.state.data) if schema else {}
    return form


def _journal_value(value: Any) -> str:
    return "" if value is None else str(value)


def _adopt_external_changes(form: Form, fresh: FormView) -> None:
    """Take what another tab of this browser changed; tell the user it happened."""
    rt = form.rt
    known = rt.view
    rt.view = fresh
    if known is None or rt.pending:
        return
    changed = [
        k
        for k in fresh.state.data.keys() | known.state.data.keys()
        if fresh.state.data.get(k) != known.state.data.get(k)
    ]
    if changed and fresh.last_writer not in ("", rt.tab):
        form._push_to_widgets(sorted(changed))
        st.toast("Updated with changes made in another tab.", icon="🔄")


def _take_outbox(form: Form, component_state: Any) -> None:
    """Apply the journal's outbox items this tab has not applied yet, in order."""
    outbox = (component_state or {}).get("outbox") if isinstance(component_state, Mapping) else None
    if not _flush_pending(form.rt):
        return  # the database is still away: the items stay unacknowledged, sent again later
    items = [i for i in (outbox or {}).get("items", []) if int(i.get("id", 0)) > form.rt.last_item]
    for item in sorted(items, key=lambda i: int(i["id"])):
        if not _apply_item(form, item):
            break  # keep order: this item and the ones after it are sent again
        form.rt.last_item = int(item["id"])


def _apply_item(form: Form, item: Mapping[str, Any]) -> bool:
    rt = form.rt
    kind = item.get("kind")
    if kind == "typed":
        name = str(item.get("field"))
        if name not in rt.readers:
            return False  # its widget is not bound yet: keep the item for the next run
        try:
            value = rt.readers[name](item.get("v"))
        except (TypeError, ValueError):
            return True  # a half-typed number ("-", "1e"): the widget sends it when complete
        return persist_input(form.key(name), value, typed=True)
    if kind in ("undo", "redo"):
        return form.run(FormState.undo if kind == "undo" else FormState.redo) is not None
    if kind == "replay":
        entries = {}
        for name, entry in dict(item.get("entries") or {}).items():
            if name in rt.readers:
                try:
                    entries[name] = JournalEntry(
                        rt.readers[name](entry.get("v")), int(entry.get("base", 0))
                    )
                except (TypeError, ValueError):
                    continue
        if not entries:
            return True
        if not _flush_pending(rt):
            return False
        try:
            rt.view, taken = _service().replay_journal(
                rt.session_id, rt.form_id, rt.defaults, entries, tab=rt.tab
            )
        except DatabaseError:
            rt.status = "retrying"
            return False
        form._push_to_widgets(taken)
        if taken:
            log.info("journal replayed", form=rt.form_id, fields=taken)
        return True
    return True


def applied_data(
    session: UserSession, form_id: str, defaults: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The draft as it was last applied (None if never), for the page's computation."""
    rt = _runtimes().get(slug_of(form_id))
    view = rt.view if rt is not None and rt.view is not None else None
    if view is None:
        view = _service().load(session.id, form_id, defaults)
    return dict(view.state.applied) if view.state.applied is not None else None


def validate(schema: type[BaseModel], data: Mapping[str, Any]) -> dict[str, str]:
    """Field-level messages for ``data`` (empty when valid); the data itself is untouched."""
    try:
        schema.model_validate(dict(data))
    except ValidationError as err:
        messages: dict[str, str] = {}
        for problem in err.errors():
            name = str(problem["loc"][0]) if problem["loc"] else "_form"
            messages.setdefault(name, problem["msg"].removeprefix("Value error, "))
        return messages
    return {}
