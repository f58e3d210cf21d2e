"""``app config``: show the settings in force (secrets hidden)."""

from __future__ import annotations

import typer

from stalwart.cli.errors import fail
from stalwart.core.config import ENV_PREFIX, load_config
from stalwart.errors import ConfigError

config_app = typer.Typer(help="Settings from the environment.", no_args_is_help=True)


@config_app.command("show")
def show_command() -> None:
    """Print every setting with its value; secrets are shown as **********."""
    try:
        cfg = load_config()
    except ConfigError as err:
        fail(err)
    for name, value in cfg.model_dump().items():
        typer.echo(f"{ENV_PREFIX}{name.upper()}={value}")
    typer.echo(f"# database in use: {cfg.resolved_database_url.split('@')[-1]}")
