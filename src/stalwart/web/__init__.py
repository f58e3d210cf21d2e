"""The HTTP side of the app: the ``st.App``, its routes, middleware and lifespan. No page logic."""
