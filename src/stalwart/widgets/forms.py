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

``s_form`` draws a form as three nested fragments with keys: the form, its toolbar (state line
and buttons) and its journal. Each change reruns only the smallest of them that shows it (see
``_rerun_after_change``): a keystroke reruns the journal alone. Nothing is inserted above the
fields (the toolbar has a fixed height, conflicts open as a dialog, messages are toasts and
fixed-height captions), so the page does not jump.
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
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.scriptrunner import get_script_run_ctx

from stalwart.bootstrap import current_app
from stalwart.core.database import RetryNotice, RetryPolicy
from stalwart.core.form_state import FormState, JournalEntry
from stalwart.core.logs import get_logger, log_error
from stalwart.core.rbac import SAVE_FORM
from stalwart.core.session import UserSession
from stalwart.errors import DatabaseError, InputRejectedError, PermissionDeniedError, StalwartError
from stalwart.services.form_service import FormService, FormView
from stalwart.services.input_rules import InputLimits, clean_input
from stalwart.widgets.auth import current_principal, fresh_principal
from stalwart.widgets.interactions import fragment, traced
from stalwart.widgets.safe_text import md_escape

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
    #: what the toolbar and the field messages showed when last drawn
    chrome_shown: tuple[Any, ...] = ()
    messages_shown: dict[str, str | None] = field(default_factory=dict)
    #: fields whose widgets must be given the draft's value before they are drawn
    to_push: set[str] = field(default_factory=set)
    #: per field, what the last change made the form say: ("refused" | "changed", text),
    #: until the field takes another change
    notices: dict[str, tuple[str, str]] = field(default_factory=dict)


def slug_of(form_id: str) -> str:
    """A form id made safe for widget keys and CSS classes."""
    return re.sub(r"[^A-Za-z0-9-]", "-", form_id)


def widget_key(slug: str, name: str) -> str:
    """The namespaced, stable key of a form field's widget: ``sw__<form>__<field>``."""
    return f"sw__{slug}__{name}"


def _runtimes() -> dict[str, FormRuntime]:
    runtimes: dict[str, FormRuntime] = st.session_state.setdefault(_RUNTIMES, {})
    return runtimes


def input_limits() -> InputLimits:
    """The running app's limits on what users type and upload."""
    return InputLimits.from_config(current_app().config)


def _service() -> FormService:
    ctx = current_app()
    return FormService(ctx.db, retry=UI_RETRY, access=ctx.auth.access).with_limits(input_limits())


def persist_input(key: str, value: Any, *, typed: bool = False) -> bool:
    """Store the value of widget ``key`` in its form's draft; False if it had to be queued.

    The value is checked here as the service will check it, so the user is told at once:
    a refused value (too long, not a finite number) is not stored, the draft keeps the
    previous one and the field says why (the widget and the browser journal keep the
    typed text); removed NULs and replaced broken characters are stored and said.
    Returns True for a refused value: it is handled, there is nothing to retry.
    """
    _prefix, slug, name = key.split("__", 2)
    rt = _runtimes()[slug]
    try:
        clean = clean_input(name, value, max_chars=input_limits().input_max_chars)
    except InputRejectedError as err:
        _notify(rt, name, ("refused", f"{err.message} {err.action}"))
        log.info("input refused", form=rt.form_id, field=name, reason=err.reason)
        return True
    _notify(rt, name, ("changed", " ".join(clean.notes)) if clean.notes else None)
    rt.pending.append((name, clean.value, typed))
    return _flush_pending(rt)


def _notify(rt: FormRuntime, name: str, notice: tuple[str, str] | None) -> None:
    """Set (or clear) field ``name``'s notice; a new one is toasted too."""
    if notice is None:
        rt.notices.pop(name, None)
        return
    if rt.notices.get(name) != notice:
        st.toast(md_escape(notice[1]), icon="⚠️" if notice[0] == "refused" else ":material/info:")
    rt.notices[name] = notice


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
    """One form on a page, for one browser tab. Built by ``s_form`` (or ``open_form``)."""

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
        self._bar: Any = None

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

    @traced
    def on_change(self, name: str) -> None:
        """Widget callback: store the widget's new value, then rerun only what must change.

        A text field's own commit (on blur or Enter) is typing as much as the journal's
        keystrokes are, so both count as one undo step. The widget already shows its value:
        unless a field message appears or goes, only the toolbar is redrawn.
        """
        key = self.key(name)
        value = self.rt.readers[name](st.session_state[key])
        known = self.rt.view
        persist_input(key, value, typed=name in self.rt.journalled)
        _rerun_after_change(self, known, Taken(typed={name}))

    def redraw(self) -> None:
        """From a callback: rerun this form (by key, so no other callback can cancel it)."""
        _rerun_fragment(form_key(self.rt.slug))

    def validate(self) -> dict[str, str]:
        """Field-level messages for the draft as it is now (empty when valid)."""
        self.errors = validate(self.schema, self.state.data) if self.schema else {}
        return self.errors

    def shown_message(self, name: str) -> str | None:
        """The message field ``name`` shows now: a notice about its last change (a refused
        or a repaired value), else its validation message once it was changed or a save
        was tried."""
        notice = self.rt.notices.get(name)
        if notice is not None:
            return notice[1]
        touched = self.rt.show_errors or self.state.data.get(name) != self.rt.defaults.get(name)
        return self.errors.get(name) if touched else None

    def shown_messages(self) -> dict[str, str | None]:
        """The message of every bound field, as the fields show them."""
        return {name: self.shown_message(name) for name in sorted(self.rt.readers)}

    def message(self, name: str) -> None:
        """The field's validation message, in a line that is always there (no jumps).

        Shown once the field was changed or a save was tried: a fresh form does not nag.
        """
        text = self.shown_message(name)
        notice = self.rt.notices.get(name)
        colour = "orange" if notice is not None and notice[0] == "changed" else "red"
        st.caption(f":{colour}[{md_escape(text)}]" if text else "\u00a0")

    # --- the form's chrome ---------------------------------------------------------------

    def chrome(self) -> tuple[Any, ...]:
        """Everything the toolbar shows: when this is unchanged, the toolbar need not redraw."""
        state = self.state
        return (
            self.status_label(),
            self.view.conflict,
            state.dirty,
            state.can_undo,
            state.can_redo,
        )

    def toolbar(self) -> None:
        """The state line and the Save / Apply / Reset / Undo / Redo buttons, then the journal.

        One line says saved / unsaved changes / saving / retrying / conflict; a conflict adds
        a "Resolve conflict…" button. The dialog opens only when the user asks (or saves): a
        modal that opened by itself would take the keystrokes of someone in mid-sentence.
        Everything here has a fixed height, so nothing moves.
        """
        rt = self.rt
        line = st.container(key=f"sws-{rt.slug}", height=44, border=False)
        left, right = line.columns([5, 2], vertical_alignment="center")
        self._indicator = left.empty()
        self._show_indicator()
        if self.view.conflict:
            right.button(
                "Resolve conflict…",
                key=f"swc__{rt.slug}__resolve",
                on_click=self._open_conflict,
                width="stretch",
            )
        self._buttons()
        if rt.save_key is not None:
            self._save()
        if self.view.conflict and rt.show_conflict:
            _conflict_dialog(self)
        elif not self.view.conflict:
            rt.show_conflict = False
        rt.chrome_shown = self.chrome()
        fragment(_journal_fragment, key=journal_fragment_key(rt.slug))(rt.slug, self.session)
        if rt.rerun_app:
            # Apply and Save change what the page computes: recompute the whole page once.
            rt.rerun_app = False
            st.rerun(scope="app")

    # Kept for pages that lay the form out themselves (``open_form``): the toolbar already
    # holds the state line and the buttons.
    def indicator(self) -> None:
        """Reserve the toolbar's place above the fields (``controls()`` fills it)."""
        self._bar = st.container(key=f"swbar-{self.rt.slug}", border=False)

    def controls(self) -> None:
        """Draw the toolbar (in the place ``indicator()`` reserved, if it was called)."""
        self.rt.messages_shown = self.shown_messages()
        with self._bar if self._bar is not None else st.container():
            fragment(_toolbar_fragment, key=toolbar_key(self.rt.slug))(
                self.rt.slug, self.session, self.schema
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

    def _buttons(self) -> None:
        state = self.state
        # A courtesy: the service checks the role again when the button's callback runs.
        actor = current_principal()
        read_only = not actor.can(SAVE_FORM)
        why = f"Your role {actor.role!r} may not save or apply forms." if read_only else None
        buttons: list[tuple[str, Callable[..., None], tuple[str, ...], bool, str | None]] = [
            ("Save", self._request_save, (), read_only, why),
            ("Apply", self._apply, (), read_only, why),
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

    @property
    def journal_key(self) -> str:
        """The key of this form's journal component."""
        return f"swj-{self.rt.slug}"

    def mount_journal(self) -> None:
        """The browser journal (no visible part), told the journalled fields and values."""
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
            on_outbox_change=_journal_callback(rt.slug, self.session, self.schema),
            on_tick_change=_journal_callback(rt.slug, self.session, self.schema),
        )

    # --- operations ----------------------------------------------------------------------

    @traced
    def _op(self, kind: str) -> None:
        ops: dict[str, Callable[[FormState], list[str]]] = {
            "undo": FormState.undo,
            "redo": FormState.redo,
            "reset": FormState.reset,
        }
        # The fields' widgets get new values: redraw the form, not the page.
        self.run(ops[kind])
        _rerun_fragment(form_key(self.rt.slug))

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
            st.toast(md_escape(f"{err.message} {err.action}"), icon="⏳")
            return None
        self._push_to_widgets(changed)
        return changed

    def _push_to_widgets(self, names: list[str]) -> None:
        """Give these fields' widgets the draft's values when the form is next drawn.

        Not at once: a callback that then reruns another fragment (as undo does) is followed
        by a run that applies the browser's widget values again, over what it had set.
        A notice about a field's last change goes: the widget no longer shows that change.
        """
        self.rt.to_push.update(names)
        for name in names:
            self.rt.notices.pop(name, None)

    def _apply_pushes(self) -> None:
        for name in sorted(self.rt.to_push):
            if name in self.rt.writers:
                st.session_state[self.key(name)] = self.rt.writers[name](self.state.data.get(name))
        self.rt.to_push.clear()

    @traced
    def _apply(self) -> None:
        rt = self.rt
        if not _flush_pending(rt):
            st.toast("The database is not answering; try again in a moment.", icon="⏳")
            _rerun_fragment(toolbar_key(rt.slug))
            return
        actor = fresh_principal()
        try:
            rt.view = _service().apply_form(
                rt.session_id, rt.form_id, rt.defaults, actor=actor, tab=rt.tab
            )
        except PermissionDeniedError as err:
            st.toast(md_escape(f"Not applied: {err.message}"), icon="🔒")
            # The sign-in ended: the page's next run asks for it (and comes back here).
            rt.rerun_app = not actor.authenticated
        except StalwartError as err:
            error_id = log_error(err, {"form": rt.form_id})
            rt.status = "retrying" if isinstance(err, DatabaseError) else ""
            st.toast(
                md_escape(f"Not applied: {err.message} {err.action} (error id {error_id})"),
                icon="⏳",
            )
        else:
            rt.rerun_app = True
            st.toast("Applied.", icon="✅")
        _rerun_fragment(toolbar_key(rt.slug))

    @traced
    def _open_conflict(self) -> None:
        self.rt.show_conflict = True
        _rerun_fragment(toolbar_key(self.rt.slug))

    @traced
    def _request_save(self) -> None:
        rt = self.rt
        if self.view.conflict:
            # Saving over a version the user has not seen: show both first.
            rt.show_conflict = True
            _rerun_fragment(toolbar_key(rt.slug))
            return  # (in a full run, which draws the dialog anyway)
        if self.validate():
            first = not rt.show_errors
            rt.show_errors = True
            st.toast("Not saved: fix the fields marked below. Your input is kept.", icon="⚠️")
            if first or self.shown_messages() != rt.messages_shown:
                _rerun_fragment(form_key(rt.slug))  # the fields' messages must show
            _rerun_fragment(toolbar_key(rt.slug))
            return
        rt.show_errors = True
        # One idempotency key per click: a save retried after a failure cannot land twice.
        if rt.save_key is None:
            rt.save_key = uuid.uuid4().hex
        _rerun_fragment(toolbar_key(rt.slug))

    def _save(self) -> None:
        if self.errors:
            self.rt.save_key = None  # the draft changed since the click and is not valid now
            return
        if not _flush_pending(self.rt):
            return  # still retrying the draft; the save request stays and runs after it
        self._show_indicator("saving")

        def retrying(notice: RetryNotice) -> None:
            self._show_indicator(f"retrying {notice.attempt}/{notice.max_attempts}")

        key = self.rt.save_key
        assert key is not None
        actor = fresh_principal()
        try:
            outcome = _service().save(
                self.rt.session_id,
                self.rt.form_id,
                self.rt.defaults,
                actor=actor,
                idempotency_key=key,
                tab=self.rt.tab,
                on_retry=retrying,
            )
        except PermissionDeniedError as err:
            # Refused, not failed: nothing to retry. The draft keeps every value.
            self.rt.save_key = None
            st.toast(md_escape(f"Not saved: {err.message} Your input is kept."), icon="🔒")
            self._show_indicator()
            # The sign-in ended: the page's next run asks for it (and comes back here).
            self.rt.rerun_app = not actor.authenticated
            return
        except StalwartError as err:
            error_id = log_error(err, {"form": self.rt.form_id})
            self.rt.status = "retrying" if isinstance(err, DatabaseError) else ""
            st.toast(
                md_escape(f"Not saved yet: {err.message} {err.action} (error id {error_id})"),
                icon="⏳",
            )
            self._show_indicator()
            return
        # With the interaction's trace id, as the audit row of this save: one leads to the other.
        log.info("form saved", form=self.rt.form_id, version=outcome.version)
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


def _rerun_fragment(key: str) -> None:
    """From a callback: rerun the fragment ``key`` instead of what the interaction reruns.

    Only when the interaction reruns a fragment. When it reruns the whole app (a link to
    another page, a reload, a widget outside any fragment), that run draws everything
    anyway, and a targeted rerun would replace it: a navigation would then rerun the form
    of the page being left instead of going to the new page.
    """
    ctx = get_script_run_ctx()
    if ctx is None or not ctx.fragment_ids_this_run or _full_rerun_pending(ctx.script_requests):
        return
    try:
        st.rerun(scope=key)
    except StreamlitAPIException:
        # The fragment is not drawn in this session (yet or any more): a journal of the page
        # just left sent its last outbox after a switch. What was sent is stored; the run
        # goes on with what the interaction reruns anyway.
        log.debug("fragment to rerun not drawn", fragment=key)


def _full_rerun_pending(requests: object) -> bool:
    """Whether a full-app rerun arrived while this run was going (a link followed from a
    focused text field: its blur reran the form, the link reruns the app).

    Streamlit merges queued reruns and takes the URL of the newest: a fragment rerun asked for
    after it would carry this run's URL and take the user back to the page being left.
    Reads ``ScriptRequests``' pending request (Streamlit 1.67 internals; pinned).
    """
    state = getattr(requests, "_state", None)
    data = getattr(requests, "_rerun_data", None)
    return (
        getattr(state, "name", None) == "RERUN"
        and data is not None
        and not getattr(data, "fragment_id", None)
        and not getattr(data, "fragment_id_queue", None)
        and not getattr(data, "is_fragment_scoped_rerun", False)
    )


def form_key(slug: str) -> str:
    """The fragment key of a form (its fields and toolbar)."""
    return f"swform-{slug}"


def toolbar_key(slug: str) -> str:
    """The fragment key of a form's toolbar (state line, buttons, journal)."""
    return f"swbar-{slug}"


def journal_fragment_key(slug: str) -> str:
    """The fragment key of a form's journal: what a keystroke reruns."""
    return f"swjournal-{slug}"


def _form_for(slug: str, session: UserSession, schema: type[BaseModel] | None) -> Form:
    form = Form(_runtimes()[slug], session, schema)
    form.validate()
    return form


def _toolbar_fragment(slug: str, session: UserSession, schema: type[BaseModel] | None) -> None:
    _form_for(slug, session, schema).toolbar()


def _journal_fragment(slug: str, session: UserSession) -> None:
    Form(_runtimes()[slug], session, None).mount_journal()


def _journal_callback(
    slug: str, session: UserSession, schema: type[BaseModel] | None
) -> Callable[[], None]:
    """What runs when the journal sends its outbox (or a retry tick): store, then redraw
    as little as possible: the journal alone, the toolbar, or the whole form."""

    def taken() -> None:
        rt = _runtimes().get(slug)
        if rt is None or rt.view is None:
            return
        form = _form_for(slug, session, schema)
        known = rt.view
        taken = _take_outbox(form, st.session_state.get(form.journal_key))
        _rerun_after_change(form, known, taken, journal_fragment_key(slug))

    return taken


def _rerun_after_change(
    form: Form, known: FormView | None, taken: Taken, default: str | None = None
) -> None:
    """After a change stored from a callback, rerun the smallest part that shows it.

    - A field's widget was given a new value (an undo typed as Ctrl+Z, a journal replay,
      another tab's change that came back with this write), or a field message appears or
      goes: the form.
    - The state line or a button changes: the toolbar (the journal is inside it).
    - Otherwise the journal alone: it must learn what was acknowledged.

    The rerun is asked for by key. Streamlit drops the default rerun of an interaction
    (the fragment of the widget that changed) when another callback of the same interaction
    targets a fragment; a button clicked while a text field still had focus is such an
    interaction. Only the journal's callback may rely on the default (``default``): its
    fragment is inside every other one, so it reruns whatever is targeted.
    """
    rt = form.rt
    fresh = rt.view
    if fresh is None:
        return
    others = sorted(
        name
        for name in fresh.state.data.keys() | (known.state.data.keys() if known else set())
        if name not in taken.typed | taken.pushed
        and known is not None
        and fresh.state.data.get(name) != known.state.data.get(name)
    )
    if others:
        form._push_to_widgets(others)
        st.toast("Updated with changes made in another tab.", icon="🔄")
    form.validate()
    if others or taken.pushed or form.shown_messages() != rt.messages_shown:
        scope = form_key(rt.slug)
    elif form.chrome() != rt.chrome_shown:
        scope = toolbar_key(rt.slug)
    else:
        scope = journal_fragment_key(rt.slug)
    if scope != default:
        _rerun_fragment(scope)


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
        f"Version **{view.head_version}** was saved by **{md_escape(view.head_saved_by)}** "
        "after the "
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


def s_form(
    session: UserSession,
    form_id: str,
    *,
    defaults: Mapping[str, Any],
    fields: Callable[[Form], None],
    schema: type[BaseModel] | None = None,
) -> None:
    """A controlled form: ``fields(form)`` draws its widgets (``s_text(form, ...)`` etc.).

    The form is a fragment of its own, and so are its toolbar and its journal, each with a
    key, so that an interaction reruns the smallest of them that shows its effect: a
    keystroke reruns the journal alone, a change that alters the state line the toolbar, an
    undo or a new field message the form; Apply and Save rerun the page.
    """
    slug = slug_of(form_id)
    fragment(_form_fragment, key=form_key(slug))(session, form_id, dict(defaults), schema, fields)


def _form_fragment(
    session: UserSession,
    form_id: str,
    defaults: dict[str, Any],
    schema: type[BaseModel] | None,
    fields: Callable[[Form], None],
) -> None:
    form = open_form(session, form_id, defaults=defaults, schema=schema)
    form.indicator()
    fields(form)
    form.controls()


def open_form(
    session: UserSession,
    form_id: str,
    *,
    defaults: Mapping[str, Any],
    schema: type[BaseModel] | None = None,
) -> Form:
    """Load the form for this tab (and what other tabs changed meanwhile).

    ``s_form`` calls it; a page that lays a form out itself calls it at the top of a fragment
    keyed ``form_key(slug_of(form_id))``, then ``form.indicator()``, the widgets, and
    ``form.controls()``, which draws the toolbar and mounts the browser journal.
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
    form._apply_pushes()
    form.validate()
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


@dataclass
class Taken:
    """What a batch of journal items did: fields typed, fields whose widgets were reset."""

    typed: set[str] = field(default_factory=set)
    pushed: set[str] = field(default_factory=set)


def _take_outbox(form: Form, component_state: Any) -> Taken:
    """Apply the journal's outbox items this tab has not applied yet, in order."""
    taken = Taken()
    outbox = (component_state or {}).get("outbox") if isinstance(component_state, Mapping) else None
    if not _flush_pending(form.rt):
        return taken  # the database is still away: the items stay unacknowledged
    items = [i for i in (outbox or {}).get("items", []) if int(i.get("id", 0)) > form.rt.last_item]
    for item in sorted(items, key=lambda i: int(i["id"])):
        if not _apply_item(form, item, taken):
            break  # keep order: this item and the ones after it are sent again
        form.rt.last_item = int(item["id"])
    return taken


def _apply_item(form: Form, item: Mapping[str, Any], taken: Taken) -> bool:
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
        taken.typed.add(name)
        return persist_input(form.key(name), value, typed=True)
    if kind in ("undo", "redo"):
        changed = form.run(FormState.undo if kind == "undo" else FormState.redo)
        taken.pushed.update(changed or [])
        return changed is not None
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
        entries = _storable_entries(rt, entries)
        if not entries:
            return True
        if not _flush_pending(rt):
            return False
        try:
            rt.view, replayed = _service().replay_journal(
                rt.session_id, rt.form_id, rt.defaults, entries, tab=rt.tab
            )
        except DatabaseError:
            rt.status = "retrying"
            return False
        form._push_to_widgets(replayed)
        taken.pushed.update(replayed)
        if replayed:
            log.info("journal replayed", form=rt.form_id, fields=replayed)
        return True
    return True


def _storable_entries(
    rt: FormRuntime, entries: Mapping[str, JournalEntry]
) -> dict[str, JournalEntry]:
    """The journal entries that can be stored; the field of each one that cannot says why."""
    limit = input_limits().input_max_chars
    usable = {}
    for name, entry in entries.items():
        try:
            clean = clean_input(name, entry.value, max_chars=limit)
        except InputRejectedError as err:
            _notify(rt, name, ("refused", f"{err.message} {err.action}"))
            continue
        if clean.notes:
            _notify(rt, name, ("changed", " ".join(clean.notes)))
        usable[name] = JournalEntry(clean.value, entry.base)
    return usable


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
