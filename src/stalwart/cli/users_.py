"""``app users``: create users, change their role, disable them, reset passwords, end sessions.

Passwords are never command-line arguments (they would show in ``ps`` and in the shell's
history): they are asked for without echo, or read from standard input with
``--password-stdin``. The commands act as the system principal ``cli``, which the audit log
names as the actor.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from stalwart.core.rbac import Principal
from stalwart.errors import InvalidAccountDataError, NotFoundError, StalwartError
from stalwart.services.auth_service import AuthService, UserInfo

users_app = typer.Typer(
    help="User accounts: create, set-role, disable, enable, reset-password, sessions.",
    no_args_is_help=True,
)

CLI = Principal.system("cli")
_USERNAME = typer.Argument(help="The username (any case).")
_STDIN = typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input."
)


@users_app.command("create")
def create_command(
    username: Annotated[str, _USERNAME],
    role: Annotated[str, typer.Option(help="viewer, editor, admin or a custom role.")] = "viewer",
    display_name: Annotated[str, typer.Option(help="The name shown in the app.")] = "",
    email: Annotated[str | None, typer.Option(help="The user's e-mail address.")] = None,
    password_stdin: Annotated[bool, _STDIN] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No local password (OIDC sign-in only).")
    ] = False,
    oidc_issuer: Annotated[
        str | None, typer.Option(help="Link to this OIDC provider (its `iss`).")
    ] = None,
    oidc_subject: Annotated[
        str | None, typer.Option(help="Link to this OIDC identity (its `sub`).")
    ] = None,
) -> None:
    """Create a user; asks for the password twice (hidden) unless --password-stdin."""
    password = None if no_password else _read_password(password_stdin)
    auth = _auth()
    try:
        info = auth.create_user(
            CLI,
            username,
            password=password,
            role=role,
            display_name=display_name,
            email=email,
            oidc_issuer=oidc_issuer,
            oidc_subject=oidc_subject,
        )
    except StalwartError as err:
        _fail(err)
    typer.echo(f"created {info.username} (id {info.id}, role {info.role})")


@users_app.command("set-role")
def set_role_command(
    username: Annotated[str, _USERNAME],
    role: Annotated[str, typer.Argument(help="viewer, editor, admin or a custom role.")],
) -> None:
    """Give a user another role; it applies at their next interaction."""
    try:
        info = _auth().set_role(CLI, username, role)
    except StalwartError as err:
        _fail(err)
    typer.echo(f"{info.username}: role {info.role}")


@users_app.command("disable")
def disable_command(username: Annotated[str, _USERNAME]) -> None:
    """Disable a user and end all their sessions at once (their drafts are kept)."""
    try:
        info = _auth().disable(CLI, username)
    except StalwartError as err:
        _fail(err)
    typer.echo(f"{info.username}: disabled, sessions ended")


@users_app.command("enable")
def enable_command(username: Annotated[str, _USERNAME]) -> None:
    """Enable a user again; also lifts a sign-in lock after too many failed attempts."""
    try:
        info = _auth().enable(CLI, username)
    except StalwartError as err:
        _fail(err)
    typer.echo(f"{info.username}: enabled")


@users_app.command("reset-password")
def reset_password_command(
    username: Annotated[str, _USERNAME],
    password_stdin: Annotated[bool, _STDIN] = False,
) -> None:
    """Set a new password (asked twice, hidden), end the user's sessions, lift any lock."""
    password = _read_password(password_stdin)
    try:
        info = _auth().reset_password(CLI, username, password)
    except StalwartError as err:
        _fail(err)
    typer.echo(f"{info.username}: password reset, sessions ended")


@users_app.command("revoke-sessions")
def revoke_sessions_command(username: Annotated[str, _USERNAME]) -> None:
    """End every session of a user (sign out everywhere); they can sign in again."""
    try:
        count = _auth().revoke_all(CLI, username)
    except StalwartError as err:
        _fail(err)
    typer.echo(f"{count} session(s) ended")


@users_app.command("list")
def list_command() -> None:
    """List users: id, username, role, state, how they sign in, last sign-in (UTC)."""
    try:
        users = _auth().list_users(CLI)
    except StalwartError as err:
        _fail(err)
    if not users:
        typer.echo("no users (create one with `app users create NAME --role admin`)")
        return
    typer.echo(f"{'id':>5}  {'username':24}  {'role':12}  {'state':8}  {'sign-in':13}  last")
    for user in users:
        typer.echo(_line(user))


@users_app.command("roles")
def roles_command() -> None:
    """List the roles in force and their permissions (custom ones: STALWART_CUSTOM_ROLES)."""
    roles = _auth().roles
    for name in roles.names:
        permissions = sorted(p.value for p in roles.permissions(name))
        typer.echo(f"{name:16}  {', '.join(permissions)}")


def _auth() -> AuthService:
    ctx = cli_context(migrate=True)
    return AuthService(ctx.db, ctx.config)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not line:
            _fail(InvalidAccountDataError("No password on standard input."))
        return line
    if not sys.stdin.isatty():
        _fail(
            InvalidAccountDataError(
                "There is no terminal to ask for the password.",
                "Pipe the password in with --password-stdin (never put it on the command line).",
            )
        )
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _fail(err: StalwartError) -> NoReturn:
    # Bad input or an unknown user is a usage error; the rest (duplicates, the last admin,
    # the database) is a failure.
    usage = isinstance(err, InvalidAccountDataError | NotFoundError)
    fail(err, EXIT_USAGE if usage else EXIT_FAILURE)


def _line(user: UserInfo) -> str:
    state = "disabled" if user.disabled else "enabled"
    ways = (("password", user.has_password), ("oidc", user.oidc_linked))
    methods = "+".join(name for name, on in ways if on)
    last = f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never"
    return (
        f"{user.id:>5}  {user.username[:24]:24}  {user.role[:12]:12}  {state:8}  "
        f"{methods or 'none':13}  {last}"
    )
