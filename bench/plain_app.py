"""A plain two-page Streamlit app, the baseline the benchmarks compare Stalwart with.

Its form page has the widgets of Stalwart's form page (``pages/form_demo.py``), laid out the
same way and written the ordinary way: text, number, select, date, multiselect, checkbox,
file upload, text area, a milestones table, Save / Apply / Reset buttons and a three-metric
summary; no fragments, no persistence. ``st.navigation`` with two pages; the other page shows
a 50-row dataframe, as Stalwart's settings page does. ``streamlit run bench/plain_app.py``
serves it.
"""

import numpy as np
import pandas as pd
import streamlit as st

STATUSES = ["planned", "active", "done"]
TAGS = ["internal", "customer", "compliance", "infrastructure", "research"]
MILESTONES = pd.DataFrame({"milestone": ["kick-off"], "due": ["2027-01-15"], "cost": [1000.0]})


def form_page() -> None:
    """The project brief's inputs, as a user fills them in."""
    st.title("Form")
    left, right = st.columns(2)
    with left:
        st.text_input("Project name", key="name", max_chars=200)
        st.number_input("Budget (EUR)", min_value=0.0, step=100.0, key="budget")
        st.selectbox("Status", STATUSES, key="status")
        st.date_input("Due date", value=None, key="due_date")
    with right:
        st.multiselect("Tags", TAGS, key="tags")
        st.checkbox("Confidential", key="confidential")
        st.file_uploader("Attachment", type=["pdf", "txt", "csv", "png", "jpg"], key="attachment")
    st.text_area("Summary", height=150, max_chars=5000, key="summary")
    milestones = st.data_editor(MILESTONES, num_rows="dynamic", key="milestones")
    buttons = st.columns(3)
    buttons[0].button("Save", key="save")
    buttons[1].button("Apply", key="apply")
    buttons[2].button("Reset", key="reset")
    st.subheader("Summary")
    budget = float(st.session_state.budget or 0)
    planned = float(pd.to_numeric(milestones["cost"], errors="coerce").fillna(0).sum())
    cols = st.container(height=120, border=True).columns(3)
    cols[0].metric("Budget", f"{budget:,.0f}")
    cols[1].metric("Milestone costs", f"{planned:,.0f}")
    cols[2].metric("Left", f"{budget - planned:,.0f}")


def data_page() -> None:
    """A 50-row table."""
    st.title("Data")
    rows = np.arange(50)
    st.dataframe(
        pd.DataFrame({"row": rows, "square": rows**2, "label": [f"item {i}" for i in rows]}),
        hide_index=True,
    )


page = st.navigation(
    [
        st.Page(form_page, title="Form", url_path="form", default=True),
        st.Page(data_page, title="Data", url_path="data"),
    ]
)
page.run()
