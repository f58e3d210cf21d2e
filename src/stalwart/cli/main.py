"""The ``app`` command: the root of every Stalwart command line."""

from __future__ import annotations

import typer

from stalwart import __version__
from stalwart.cli.app_ import run
from stalwart.cli.audit_ import audit_app
from stalwart.cli.cache_ import cache_app
from stalwart.cli.config_ import config_app
from stalwart.cli.db_ import db_app
from stalwart.cli.health_ import health_command
from stalwart.cli.jobs_ import jobs_app
from stalwart.cli.users_ import users_app

app = typer.Typer(
    name="app",
    help=(
        "Stalwart: run the app and operate its database, audit log, jobs, cache, users and "
        "settings."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("health")(health_command)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(config_app, name="config")
app.add_typer(jobs_app, name="jobs")
app.add_typer(cache_app, name="cache")
app.add_typer(users_app, name="users")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stalwart {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Stalwart: run the app and operate its database, audit log, jobs, cache, users, settings."""


def main() -> None:
    """Entry point of the ``app`` console script."""
    app()


if __name__ == "__main__":
    main()
