"""``app audit``: check the audit log's hash chain."""

from __future__ import annotations

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE, fail
from stalwart.core.audit import verify_chain
from stalwart.errors import AuditChainError, StalwartError

audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify_command() -> None:
    """Walk the whole audit log; exit 1 and name the first broken link if there is one."""
    ctx = cli_context()
    try:
        with ctx.db.get_conn() as conn:
            report = verify_chain(conn)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    if report.ok:
        typer.echo(f"ok: {report.checked} audit row(s), chain intact")
        return
    fail(
        AuditChainError(
            f"audit row {report.first_broken_id} breaks the chain: {report.reason} "
            f"({report.checked} row(s) before it are intact)"
        ),
        EXIT_FAILURE,
    )
