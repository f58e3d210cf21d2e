"""``streamlit`` with Stalwart's server tuning applied first, for the plain app's tuned rows.

    python bench/tuned_streamlit.py [--gc freeze|timer|shipped] [--no-nodelay] run app.py ...

``--gc freeze-auto`` is what Stalwart does: import the heavy modules, then ``gc.freeze()``,
and ``runner.postScriptGC=false`` (Python's own collector, no full collection per run);
``--gc freeze`` keeps Streamlit's collection after every run (Stalwart's first choice);
``--gc timer`` is ``runner.postScriptGC=false`` and a full collection every
``--gc-interval`` seconds from a daemon thread, outside interactions.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time

from stalwart.web.server_tuning import HEAVY_MODULES, enable_tcp_nodelay, freeze_startup_heap


def collect_periodically(interval_s: float) -> threading.Thread:
    """Run a full collection every ``interval_s`` seconds on a daemon thread."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            gc.collect()

    thread = threading.Thread(target=loop, name="gc-timer", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """Apply the chosen tuning, then hand the rest of the command line to Streamlit's CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gc", choices=["freeze-auto", "freeze", "timer", "shipped"], default="freeze-auto"
    )
    parser.add_argument("--gc-interval", type=float, default=60.0)
    parser.add_argument("--no-nodelay", action="store_true")
    args, streamlit_args = parser.parse_known_args()
    if not args.no_nodelay:
        enable_tcp_nodelay()
    if args.gc in ("freeze", "freeze-auto"):
        # Streamlit's server modules too, so what it builds at import is frozen with the rest.
        freeze_startup_heap((*HEAVY_MODULES, "streamlit.web.cli", "uvicorn"))
    if args.gc == "freeze-auto":
        os.environ["STREAMLIT_RUNNER_POST_SCRIPT_GC"] = "false"
    elif args.gc == "timer":
        os.environ["STREAMLIT_RUNNER_POST_SCRIPT_GC"] = "false"
        collect_periodically(args.gc_interval)

    from streamlit.web import cli

    sys.argv = ["streamlit", *streamlit_args]
    cli.main()


if __name__ == "__main__":
    main()
