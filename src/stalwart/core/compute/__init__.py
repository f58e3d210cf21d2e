"""Pure functions: no I/O, no Streamlit, nothing of ours imported (but each other)."""
