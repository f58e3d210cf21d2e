"""``app db``: migrate, downgrade, show the schema revision, seed demo data."""

from __future__ import annotations

from typing import Annotated

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE, fail
from stalwart.core.migrations import current_revision, downgrade, head_revision, migrate
from stalwart.errors import StalwartError
from stalwart.services.demo_data import seed_demo_data

db_app = typer.Typer(help="Database schema and data.", no_args_is_help=True)


@db_app.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the schema to REVISION (default: head), under a lock; safe to run twice."""
    ctx = cli_context()
    try:
        applied = migrate(ctx.db, revision)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "already at " + revision)


@db_app.command("downgrade")
def downgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for empty.")],
) -> None:
    """Downgrade the schema to REVISION (see MIGRATIONS.md before doing this in production)."""
    ctx = cli_context()
    try:
        removed = downgrade(ctx.db, revision)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    typer.echo(f"reverted: {', '.join(removed)}" if removed else "already at " + revision)


@db_app.command("current")
def current_command() -> None:
    """Print the database's schema revision and the newest one this code knows."""
    ctx = cli_context()
    try:
        current = current_revision(ctx.db)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    head = head_revision()
    state = "up to date" if current == head else "behind: run `app db migrate`"
    typer.echo(f"current: {current or 'empty'}\nhead: {head}\n{state}")


@db_app.command("seed")
def seed_command() -> None:
    """Add the demo projects that are missing (idempotent: a second run adds nothing)."""
    ctx = cli_context(migrate=True)
    try:
        created = seed_demo_data(ctx.db)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    typer.echo(f"seeded {created} demo project(s)")
