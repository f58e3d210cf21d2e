"""Two fixes below the app that Streamlit 1.67 needs to answer an interaction quickly.

Each costs about 40 ms per interaction as shipped (see ``../shared/PERF.md``;
``bench/run_bench.py`` measures both):

- **Nagle's algorithm on the websocket.** asyncio sets ``TCP_NODELAY`` only on sockets whose
  ``proto`` is ``IPPROTO_TCP``; Streamlit binds its listening socket with ``proto == 0``, so
  the sockets it accepts keep Nagle on, and every frame of a run after the first waits for the
  browser's delayed ACK. :func:`enable_tcp_nodelay` sets ``TCP_NODELAY`` on the listening
  socket, which accepted sockets inherit (Linux, where the tests check it, and the BSDs copy
  it on ``accept()``).
- **A full garbage collection after every script run** (``runner.postScriptGC``), which walks
  pandas, pyarrow and the rest of the heap each time. :func:`freeze_startup_heap` imports those
  modules once at start-up and moves everything alive then into the permanent generation
  (``gc.freeze()``), so no collection walks them again; and
  :func:`skip_collection_after_every_run` turns the per-run collection off, because what is
  left to walk after the freeze grows with the sessions (see below).

Choice of the GC fix: ``bench/run_bench.py`` (2-core AMD EPYC, 2026-11-22, the plain two-page
app, TCP_NODELAY on in both rows, websocket round trip in ms, p50 / p95 / max, n=200):

    variant                                          select change       page switch
    gc.freeze() after start-up, postScriptGC kept    6.4 / 7.7 / 9.8     9.0 / 14.3 / 19.5
    postScriptGC=false, gc.collect() every 10 s      6.3 / 10.3 / 17.1   6.3 / 10.4 / 103.5
    (as shipped, neither fix:                        77.9 / 148 / 295    84.3 / 154 / 468)

A second run (with other test suites loading the machine) gave the same picture: freeze
6.2 / 10.2 / 30.3 and 8.7 / 21.2 / 50.7, timer 6.2 / 7.5 / 13.5 and 6.1 / 6.9 / 90.1.
The timer is up to 3 ms faster at the median, but its full collection stalls whichever
interaction it meets (90-104 ms), while the freeze's worst case stayed at about half that
even under load. Freeze was chosen: it bounds the worst case, needs no thread, and also makes the
interpreter's own automatic full collections cheap, which the timer does not.

That was one session. With many, the collection after every run walks every session's state
on every run: ``bench/load_bench.py`` (2-core Intel Xeon, 2026-11-22, Stalwart's form page,
think time 0.3-1.5 s, ms p50 / p95 of all interactions) measured

    sessions   collection after every run   Python's own collector only
    10         13.3 / 27.5                   11.0 / 23.5
    50         775 / 929 (92 % CPU)          26.4 / 97.6 (72 % CPU)

so Stalwart keeps the freeze and leaves collection to Python's generational collector, whose
full collections follow the amount allocated rather than the number of runs.
"""

from __future__ import annotations

import functools
import gc
import importlib
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from stalwart.core.logs import get_logger

# What Streamlit imports lazily on the first dataframe or chart (pandas, pyarrow, numpy,
# altair) plus Streamlit's own modules that wrap them. Imported before the freeze so that
# they are frozen too instead of being walked by every later collection. ``magic_funcs`` is
# imported by the first run of every script (Streamlit inserts the import): importing it here
# keeps that import out of the first interaction (a CI run once saw it fail there with a
# KeyError, its sys.modules entry gone mid-import).
HEAVY_MODULES: Final[tuple[str, ...]] = (
    "streamlit.runtime.scriptrunner.magic_funcs",
    "numpy",
    "pandas",
    "pyarrow",
    "altair",
    "streamlit.dataframe_util",
    "streamlit.elements.arrow",
    "streamlit.elements.vega_charts",
)

_WRAPPED_MARK: Final = "_stalwart_sets_tcp_nodelay"

_log = get_logger(__name__)


def set_tcp_nodelay(sock: socket.socket) -> bool:
    """Turn Nagle's algorithm off on ``sock`` if it is a TCP socket; True if it was set."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


def enable_tcp_nodelay() -> bool:
    """Make the Streamlit server's listening sockets (and so every accepted one) TCP_NODELAY.

    Wraps ``streamlit.web.server.starlette.starlette_server._bind_socket``, which both of
    Streamlit's servers (``App.run``/``streamlit run`` of an ``st.App`` and the classic
    ``streamlit run script.py``) call to bind. Call it before the server starts; calling it
    again changes nothing. Returns False, with a warning, if this Streamlit has no such hook.
    """
    # Imported here: Streamlit is slow to import and this module is imported by the CLI.
    from streamlit.web.server.starlette import starlette_server

    original: Callable[[str, int, int], socket.socket] | None = getattr(
        starlette_server, "_bind_socket", None
    )
    if original is None:
        # A Streamlit upgrade moved the hook: serve anyway, but say that latency will suffer.
        _log.warning(
            "TCP_NODELAY not enabled: streamlit has no _bind_socket to wrap",
            streamlit_module=starlette_server.__name__,
        )
        return False
    if getattr(original, _WRAPPED_MARK, False):
        return True

    @functools.wraps(original)
    def bind_socket_without_nagle(address: str, port: int, backlog: int) -> socket.socket:
        sock = original(address, port, backlog)
        set_tcp_nodelay(sock)
        return sock

    setattr(bind_socket_without_nagle, _WRAPPED_MARK, True)
    starlette_server._bind_socket = bind_socket_without_nagle
    return True


@dataclass(frozen=True)
class FrozenHeap:
    """What :func:`freeze_startup_heap` did: objects frozen, modules it could not import."""

    frozen_objects: int
    missing_modules: tuple[str, ...]
    elapsed_ms: float


def freeze_startup_heap(modules: Iterable[str] = HEAVY_MODULES) -> FrozenHeap:
    """Import ``modules``, collect once, then freeze every live object out of later collections.

    Call once, after start-up work (imports, settings, database) and before serving. Streamlit's
    full collection after each run then costs a few milliseconds instead of tens. Memory stays
    bounded: objects made after the freeze are still collected after every run; what was frozen
    lives as long as the process would have kept it anyway (modules, settings, the app).
    """
    started = time.perf_counter()
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            # An optional module that is not installed has nothing to freeze.
            missing.append(name)
    # Collect first so that garbage from start-up is freed rather than frozen forever.
    gc.collect()
    gc.freeze()
    result = FrozenHeap(
        frozen_objects=gc.get_freeze_count(),
        missing_modules=tuple(missing),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    _log.info(
        "startup heap frozen",
        frozen_objects=result.frozen_objects,
        missing_modules=list(result.missing_modules),
        elapsed_ms=result.elapsed_ms,
    )
    return result


def skip_collection_after_every_run() -> None:
    """Turn off Streamlit's full collection after every script run (``runner.postScriptGC``).

    With the start-up heap frozen, that collection still walks every object made since, and
    with many sessions that is mostly their state: ``bench/load_bench.py`` measured 70-83 % of
    the server's busy time in it at 50 sessions, and about 11 ms per interaction at 10 (one
    walk per run, over everything every session holds). Without it, Python's generational
    collector frees cycles as usual: young ones after a few hundred allocations, the old
    generation when it has grown by a quarter, so the cost follows what is allocated, not
    the number of runs. ``STALWART_GC_AFTER_EVERY_RUN=true`` brings Streamlit's back.
    """
    # Imported here: Streamlit is slow to import and this module is imported by the CLI.
    from streamlit import config

    # Read by ScriptRunner after each run, so setting it here (the app's lifespan) reaches
    # every launcher: `app run`, `streamlit run app.py`, `uvicorn app:app`.
    config.set_option("runner.postScriptGC", False, where_defined="stalwart")
    _log.info("streamlit post-run garbage collection off")


def nodelay_on_listening_sockets() -> int:
    """Set TCP_NODELAY on this process's listening TCP sockets; returns how many were set.

    For servers that bound their socket before Stalwart's code was imported, which
    :func:`enable_tcp_nodelay` cannot wrap: ``streamlit run app.py`` binds first and loads the
    ``st.App`` script later. Sockets accepted afterwards inherit the option (Linux). Looks the
    sockets up in ``/proc/self/fd``; elsewhere it does nothing and returns 0.
    """
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        return 0
    count = 0
    for name in os.listdir(fd_dir):
        try:
            if not os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                continue
            dup = os.dup(int(name))
        except OSError:
            continue  # closed meanwhile (the listing itself was one of these descriptors)
        with socket.socket(fileno=dup) as sock:
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            except OSError:
                continue
            if listening and set_tcp_nodelay(sock):
                count += 1
    _log.info("TCP_NODELAY set on listening sockets", sockets=count)
    return count
