"""Controlled widgets: ``s_text``, ``s_textarea``, ``s_number``, ``s_select``, ``s_multiselect``,
``s_checkbox``, ``s_date``, ``s_file``, ``s_table``.

Each is a real Streamlit widget (a real label, keyboard-accessible) with a stable, namespaced
key (``sw__<form>__<field>``), seeded from the form's draft and writing every change back to
it through ``persist_input``. Text-like fields are journalled in the browser on every keystroke
as well (see ``forms.py``). Each returns the field's current value as stored in the draft.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pandas as pd
import streamlit as st

from stalwart.core.logs import get_logger
from stalwart.errors import StalwartError
from stalwart.services.uploads import allowed_types, upload_limit_mb
from stalwart.widgets.forms import Form, _service, input_limits, persist_input
from stalwart.widgets.interactions import traced
from stalwart.widgets.safe_text import md_escape

log = get_logger(__name__)


def s_text(form: Form, name: str, label: str, **kwargs: Any) -> str:
    """A one-line text field."""
    key = form.bind(name, to_widget=_str, from_widget=_str, journalled=True)
    st.text_input(label, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return str(form.state.data.get(name) or "")


def s_textarea(form: Form, name: str, label: str, **kwargs: Any) -> str:
    """A multi-line text field."""
    key = form.bind(name, to_widget=_str, from_widget=_str, journalled=True)
    st.text_area(label, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return str(form.state.data.get(name) or "")


def s_number(
    form: Form, name: str, label: str, *, step: float = 1.0, **kwargs: Any
) -> float | None:
    """A number field; typing is journalled, the value is stored as a number."""
    key = form.bind(name, to_widget=_number, from_widget=_number, journalled=True)
    st.number_input(label, key=key, step=step, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return _number(form.state.data.get(name))


def s_select(
    form: Form, name: str, label: str, options: Sequence[str], **kwargs: Any
) -> str | None:
    """One choice of ``options``."""
    key = form.bind(name, to_widget=lambda v: v if v in options else None)
    st.selectbox(label, options, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    value = form.state.data.get(name)
    return str(value) if value is not None else None


def s_multiselect(
    form: Form, name: str, label: str, options: Sequence[str], **kwargs: Any
) -> list[str]:
    """Several choices of ``options``."""
    key = form.bind(
        name,
        to_widget=lambda v: [x for x in (v or []) if x in options],
        from_widget=lambda v: list(v or []),
    )
    st.multiselect(label, options, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return list(form.state.data.get(name) or [])


def s_checkbox(form: Form, name: str, label: str, **kwargs: Any) -> bool:
    """A yes/no field."""
    key = form.bind(name, to_widget=bool, from_widget=bool)
    st.checkbox(label, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return bool(form.state.data.get(name))


def s_date(form: Form, name: str, label: str, **kwargs: Any) -> date | None:
    """A date, stored as ISO 8601 (YYYY-MM-DD)."""
    key = form.bind(name, to_widget=_to_date, from_widget=_from_date)
    st.date_input(label, key=key, on_change=form.on_change, args=(name,), **kwargs)
    form.message(name)
    return _to_date(form.state.data.get(name))


def s_file(
    form: Form, name: str, label: str, *, types: Sequence[str] | None = None, **kwargs: Any
) -> dict[str, Any] | None:
    """A file attachment, stored in the database so the draft keeps it across restarts.

    ``types`` are extensions ("csv", "png"); the app's ``upload_allowed_types`` narrow them,
    and ``upload_max_bytes`` bounds the size. The browser checks both first, the service
    checks them again with the content (``services.uploads``): a refused file is not
    attached, the reason is shown under the field, the uploader is emptied, and the draft's
    other fields are untouched.
    """
    current = form.state.data.get(name)
    base_key = form.key(name)
    error_key = f"{base_key}__upload_error"
    generation_key = f"{base_key}__upload_gen"
    generation = st.session_state.get(generation_key, 0)
    upload_key = f"{base_key}__upload" + (f"__{generation}" if generation else "")
    limits = input_limits()
    allowed = allowed_types(limits, types)
    form.bind(name)

    @traced
    def uploaded() -> None:
        file = st.session_state.get(upload_key)
        if file is None:
            return
        try:
            meta = _service().store_file(
                file.name, file.type or "application/octet-stream", file.getvalue(), types=types
            )
        except StalwartError as err:
            st.session_state[error_key] = f"{err.message} {err.action}"
            # A new uploader: the refused file must not look attached.
            st.session_state[generation_key] = st.session_state.get(generation_key, 0) + 1
            log.info("upload refused", field=name, reason=getattr(err, "reason", ""))
            form.redraw()
            return
        st.session_state.pop(error_key, None)
        persist_input(base_key, meta)
        form.redraw()

    @traced
    def remove() -> None:
        st.session_state.pop(error_key, None)
        persist_input(base_key, None)
        form.redraw()

    st.file_uploader(
        label,
        type=allowed,
        key=upload_key,
        on_change=uploaded,
        max_upload_size=upload_limit_mb(limits.upload_max_bytes),
        **kwargs,
    )
    line = st.columns([4, 1], vertical_alignment="center")
    if isinstance(current, dict):
        line[0].caption(
            f"Attached: **{md_escape(current.get('name'))}** ({_size(current.get('size'))})"
        )
        line[1].button("Remove", key=f"{base_key}__remove", on_click=remove)
    else:
        line[0].caption("No file attached.")
    refused = st.session_state.get(error_key)
    if refused:
        st.error(md_escape(refused), icon=":material/block:")
    form.message(name)
    return current if isinstance(current, dict) else None


def s_table(
    form: Form, name: str, label: str, *, columns: Sequence[str], **kwargs: Any
) -> list[dict[str, Any]]:
    """An editable table (rows can be added and removed), stored as a list of rows.

    The editor is handed a fixed base of rows and keeps its own edits on top; every edit stores
    ``base + edits`` in the draft. Handing it the stored rows back would remount it (for
    dynamic rows, Streamlit's widget identity includes the data) and drop the cell being typed.
    Only when the draft changes from elsewhere (undo, replay, reset, another tab) does it get a
    new base, under a new generation of its key.
    """
    rows: list[dict[str, Any]] = [dict(r) for r in (form.state.data.get(name) or [])]
    form.bind(name)
    base_key = f"{form.key(name)}__base"
    base = st.session_state.get(base_key)
    if base is None or base["owner"] != form.rt.session_id:
        base = {"rows": rows, "gen": 0, "owner": form.rt.session_id}
    editor_key = f"{form.key(name)}__editor__{base['gen']}"
    if apply_edits(base["rows"], st.session_state.get(editor_key) or {}, columns) != rows:
        base = {"rows": rows, "gen": base["gen"] + 1, "owner": form.rt.session_id}
        editor_key = f"{form.key(name)}__editor__{base['gen']}"
    st.session_state[base_key] = base

    @traced
    def edited() -> None:
        edits = st.session_state.get(editor_key) or {}
        persist_input(form.key(name), apply_edits(base["rows"], edits, columns))
        form.redraw()

    st.caption(label)
    st.data_editor(
        pd.DataFrame(base["rows"], columns=list(columns)),
        key=editor_key,
        num_rows="dynamic",
        on_change=edited,
        hide_index=True,
        width="stretch",
        **kwargs,
    )
    form.message(name)
    return rows


def apply_edits(
    rows: list[dict[str, Any]], edits: dict[str, Any], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows after a data editor's ``edited_rows``/``added_rows``/``deleted_rows``."""
    result = [dict(r) for r in rows]
    for index, change in (edits.get("edited_rows") or {}).items():
        result[int(index)].update({k: _plain(v) for k, v in change.items()})
    deleted = {int(i) for i in edits.get("deleted_rows") or []}
    result = [r for i, r in enumerate(result) if i not in deleted]
    for added in edits.get("added_rows") or []:
        result.append({c: _plain(added.get(c)) for c in columns})
    return result


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def _to_date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _from_date(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, date) else None


def _size(size: Any) -> str:
    n = int(size or 0)
    return (
        f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"
    )
