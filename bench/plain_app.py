"""A plain two-page Streamlit app, the baseline the benchmarks compare Stalwart with.

The same widgets as the form Stalwart serves (text input, text area, select, number), written
the ordinary way: ``st.navigation`` with two pages, no fragments, no persistence. The other
page shows a 50-row dataframe. ``streamlit run bench/plain_app.py`` serves it.
"""

import numpy as np
import pandas as pd
import streamlit as st

COLOURS = ["red", "green", "blue", "yellow"]


def form_page() -> None:
    """Four inputs, as a user fills them in."""
    st.title("Form")
    st.text_input("Name", key="name")
    st.text_area("Notes", key="notes")
    st.selectbox("Colour", COLOURS, key="colour")
    st.number_input("Quantity", min_value=0, value=1, key="quantity")
    st.caption(f"Colour: {st.session_state.colour}")


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
