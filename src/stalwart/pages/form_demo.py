"""The form demo: a project brief whose input is never lost.

Text, long text, number, select, multi-select, checkbox, date, file and table fields in one
``s_form`` (a keystroke reruns only the form's journal, not the form), with Save / Apply /
Reset, undo / redo, the state indicator and the conflict panel. Below the form, a summary
computed from the *applied* draft: the main container recomputes only on Apply, Save and navigation.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Final, Literal

import streamlit as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stalwart.pages.base import Page, PageRequest
from stalwart.widgets.forms import Form, applied_data, s_form
from stalwart.widgets.inputs import (
    s_checkbox,
    s_date,
    s_file,
    s_multiselect,
    s_number,
    s_select,
    s_table,
    s_text,
    s_textarea,
)
from stalwart.widgets.nav import Link, nav_links

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

STATUSES: Final = ("planned", "active", "done")
TAGS: Final = ("internal", "customer", "compliance", "infrastructure", "research")
MILESTONE_COLUMNS: Final = ("milestone", "due", "cost")
DEFAULTS: Final[dict[str, Any]] = {
    "name": "",
    "summary": "",
    "budget": 0,
    "status": "planned",
    "tags": [],
    "due_date": None,
    "confidential": False,
    "attachment": None,
    "milestones": [],
}


class ProjectBrief(BaseModel):
    """What a brief must be to be saved; a draft may be anything while it is typed."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=3, max_length=200)
    summary: str = Field(max_length=5000)
    budget: float = Field(ge=0, le=1_000_000_000)
    status: Literal["planned", "active", "done"]
    tags: list[str]
    due_date: date | None
    confidential: bool
    attachment: dict[str, Any] | None
    milestones: list[dict[str, Any]]

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a name is required")
        return value


class BriefParams(BaseModel):
    """``?page=form-demo&brief=N``: which of the briefs to edit."""

    model_config = ConfigDict(extra="forbid")

    brief: int = Field(default=1, ge=1, le=999)


class FormDemoPage(Page):
    """A project brief with every kind of field, kept through anything."""

    slug = "form-demo"
    title = "Form demo"
    icon = ":material/edit_note:"
    params_model = BriefParams

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The brief picker, the form (a fragment) and the summary of the applied draft."""
        brief = int(req.params.get("brief", 1))
        st.title(f"Project brief {brief}")
        picks = [Link(f"Brief {n}", self.slug, {"brief": n}) for n in (1, 2, 3)]
        nav_links(
            "brief-pick",
            picks,
            current=picks[brief - 1] if brief <= 3 else None,
            label="Briefs",
            layout="row",
        )
        form_id = f"project_brief:{brief}"
        s_form(req.session, form_id, defaults=DEFAULTS, schema=ProjectBrief, fields=_brief_fields)
        _summary(req, form_id)


def _brief_fields(form: Form) -> None:
    left, right = st.columns(2)
    with left:
        s_text(form, "name", "Project name", max_chars=200)
        s_number(form, "budget", "Budget (EUR)", min_value=0.0, step=100.0)
        s_select(form, "status", "Status", STATUSES)
        s_date(form, "due_date", "Due date", value=None)
    with right:
        s_multiselect(form, "tags", "Tags", TAGS)
        s_checkbox(form, "confidential", "Confidential")
        s_file(form, "attachment", "Attachment", types=("pdf", "txt", "csv", "png", "jpg"))
    s_textarea(form, "summary", "Summary", height=150, max_chars=5000)
    s_table(form, "milestones", "Milestones", columns=MILESTONE_COLUMNS)


def _summary(req: PageRequest, form_id: str) -> None:
    applied = applied_data(req.session, form_id, DEFAULTS)
    st.subheader("Applied summary")
    box = st.container(height=120, border=True)  # fixed height: nothing below it moves
    if applied is None:
        box.caption("Press **Apply** to compute the summary from the draft.")
        return
    milestones = applied.get("milestones") or []
    planned = sum(float(m.get("cost") or 0) for m in milestones if _is_number(m.get("cost")))
    budget = float(applied.get("budget") or 0)
    cols = box.columns(3)
    cols[0].metric("Budget", f"{budget:,.0f}")
    cols[1].metric("Milestone costs", f"{planned:,.0f}")
    cols[2].metric("Left", f"{budget - planned:,.0f}")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
