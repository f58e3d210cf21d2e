"""How long each interaction takes on the server, for the app's metrics.

An interaction is one script run: a full run of the page shell, or a rerun of a fragment only
(typing in a form reruns the form's fragment, not the page). The shell times its full runs with
``full_run``; ``fragment`` is ``st.fragment`` whose reruns are timed. Both label the run with
the page the tab shows, and a full run that shows another page than the tab's previous full
run is also a page switch. Each costs one histogram observation: no database, no I/O.

Each interaction also has one trace id in the logs: ``traced`` callbacks (they run before the
script body) bind it, and the shell's full run or a fragment's rerun adopts it, adds the tab's
page, session and user, and unbinds it all when the run ends (see ``core.logs.interaction``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, ParamSpec, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from stalwart.bootstrap import current_app
from stalwart.core.logs import ensure_trace, interaction
from stalwart.core.metrics import UNKNOWN, Metrics

_P = ParamSpec("_P")
_R = TypeVar("_R")

FULL: Final = "full"
FRAGMENT: Final = "fragment"
#: the page the tab's last full run showed (the label of its fragment reruns)
TAB_PAGE_KEY: Final = "_stalwart_metrics_page"
#: set while a fragment rerun is timed, so the fragments nested in it are not timed again
_TIMING_KEY: Final = "_stalwart_metrics_timing"
#: the page, session and user of the tab's last full run, for the logs of callbacks and fragments
LOG_CONTEXT_KEY: Final = "_stalwart_log_context"


@dataclass
class FullRun:
    """One full run being timed; the shell sets ``page`` once the router has resolved it."""

    page: str = UNKNOWN


@contextmanager
def full_run(metrics: Metrics) -> Iterator[FullRun]:
    """Time the block as one full run of ``run.page`` (and a page switch if the page changed).

    Also timed when the block raises (a failed or interrupted run costs time too); a run that
    ended before its page was known is labelled ``unknown`` and changes no tab's page.
    """
    run = FullRun()
    started = time.perf_counter()
    try:
        yield run
    finally:
        seconds = time.perf_counter() - started
        metrics.observe_interaction(run.page, FULL, seconds)
        if run.page != UNKNOWN:
            previous = st.session_state.get(TAB_PAGE_KEY)
            if previous is not None and previous != run.page:
                metrics.observe_page_switch(run.page, seconds)
            st.session_state[TAB_PAGE_KEY] = run.page


def fragment(
    body: Callable[..., Any],
    *,
    key: str | None = None,
    run_every: float | timedelta | None = None,
) -> Callable[..., Any]:
    """``st.fragment(body, key=key, run_every=run_every)``, with each rerun of it timed.

    Its run inside a full run is part of that run's time; a rerun of the fragment alone (a
    widget in it changed, its timer fired) is one ``fragment`` interaction of the tab's page.
    """

    @functools.wraps(body)  # keeps __module__ and __qualname__: the fragment's identity
    def timed(*args: Any, **kwargs: Any) -> Any:
        with interaction(**log_context()):
            return _timed_run(body, args, kwargs)

    return st.fragment(timed, key=key, run_every=run_every)


def _timed_run(body: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    if not _fragments_only() or st.session_state.get(_TIMING_KEY):
        return body(*args, **kwargs)
    st.session_state[_TIMING_KEY] = True
    started = time.perf_counter()
    try:
        return body(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - started
        st.session_state.pop(_TIMING_KEY, None)
        page = st.session_state.get(TAB_PAGE_KEY, UNKNOWN)
        current_app().metrics.observe_interaction(str(page), FRAGMENT, seconds)


def traced(callback: Callable[_P, _R]) -> Callable[_P, _R]:
    """``callback`` (an on_click/on_change) run with the interaction's trace id bound.

    Callbacks run before the script body, outside the shell's block: this binds the trace id
    (and the tab's page, session and user) that the body or fragment rerun then adopts.
    """

    @functools.wraps(callback)
    def bound(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        ensure_trace(**log_context())
        return callback(*args, **kwargs)

    return bound


def remember_log_context(**context: Any) -> None:
    """Keep the page, session and user of this full run for the tab's callbacks and fragments."""
    st.session_state[LOG_CONTEXT_KEY] = context


def log_context() -> dict[str, Any]:
    """The page, session and user the tab's last full run showed (empty before the first)."""
    context = st.session_state.get(LOG_CONTEXT_KEY)
    return dict(context) if isinstance(context, dict) else {}


def _fragments_only() -> bool:
    """True in a rerun of fragments (not a full run of the script)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    return bool(ctx is not None and ctx.fragment_ids_this_run)
