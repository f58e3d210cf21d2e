"""The no-op job of the jobs benchmark (``bench/jobs_bench.py``).

Every process that runs it imports it as ``bench.jobs_noop`` (the repository root on
``sys.path``), so the reference stored in the ``jobs`` table is the same everywhere. It
returns the wall-clock time of its first line, so the benchmark can time enqueue-to-start from
the job's own point of view, across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from stalwart.core.jobs import NoArgs, Reporter, job_function


@job_function()
def noop(args: NoArgs, reporter: Reporter) -> dict[str, Any]:
    """Nothing: the time its first line ran, and the process that ran it."""
    return {"t": time.time(), "pid": os.getpid()}
