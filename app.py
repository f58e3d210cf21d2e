"""Entry point: ``streamlit run app.py`` and ``uvicorn app:app`` serve ``app``.

``python app.py [--host H] [--port P]`` is ``app run``: settings from the environment
(``STALWART_HOST``, ``STALWART_PORT``, ...) and the same checks before it starts.
"""

import sys

import streamlit as st

from stalwart.web.asgi import SHELL_SCRIPT, app_options

# Spelled out as `st.App(...)` rather than `build_app()`: `streamlit run` finds the app by
# reading this file's syntax tree for an `st.App` call, and would otherwise run this file as
# an ordinary script.
app = st.App(SHELL_SCRIPT, **app_options())

if __name__ == "__main__":
    from stalwart.cli.main import app as cli

    cli(["run", *sys.argv[1:]])
