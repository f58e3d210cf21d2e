"""How the CLI reports a Stalwart error: the message, what to do, and an exit status."""

from __future__ import annotations

from typing import NoReturn

import typer

from stalwart.errors import StalwartError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(err: StalwartError, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``err`` for a person (message, then the suggested action) and exit."""
    typer.echo(f"error: {err.message}", err=True)
    typer.echo(f"what to do: {err.action}", err=True)
    raise typer.Exit(code)
