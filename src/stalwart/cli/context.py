"""The app context for a CLI command: settings from the environment, logs on stderr."""

from __future__ import annotations

import sys

from stalwart.bootstrap import AppContext, init_app
from stalwart.cli.errors import fail
from stalwart.errors import StalwartError


def cli_context(*, migrate: bool = False) -> AppContext:
    """Build the app context for a command, turning a bad setting into a clear exit."""
    try:
        return init_app(run_migrations=migrate, log_stream=sys.stderr)
    except StalwartError as err:
        fail(err)
