"""What code this process runs: the package version and the git commit it was built from.

The commit comes from ``STALWART_COMMIT`` (set by the image build or the deploy tool), else
from ``git rev-parse HEAD`` when the code runs from a checkout, else ``"unknown"``. It is read
once per process: a checkout that moves under a running process does not change what runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Final

from stalwart import __version__

COMMIT_ENV: Final = "STALWART_COMMIT"
UNKNOWN: Final = "unknown"
_COMMIT: Final = re.compile(r"[0-9a-fA-F]{7,64}|[\w.\-/+]{1,64}")
_GIT_TIMEOUT_S: Final = 2.0


def build_version() -> str:
    """The installed package's version."""
    return __version__


@cache
def build_commit() -> str:
    """The commit this process runs (see the module doc); at most 64 characters."""
    given = os.environ.get(COMMIT_ENV, "").strip()
    if given:
        return given[:64] if _COMMIT.fullmatch(given[:64]) else UNKNOWN
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN  # no git, or it hung: the commit is simply not known
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else UNKNOWN
