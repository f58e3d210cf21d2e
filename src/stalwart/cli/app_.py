"""``app run``: serve the web app (the Streamlit UI plus /healthz and /readyz).

The command only parses, checks and calls: settings come from ``load_config()``, the app from
``stalwart.web.asgi.build_app()``.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from stalwart.bootstrap import init_app
from stalwart.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from stalwart.core.config import ENV_PREFIX, load_config
from stalwart.errors import ConfigError, StalwartError


def run(
    host: Annotated[
        str | None,
        typer.Option(help=f"Interface to listen on (default: ${ENV_PREFIX}HOST, else 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help=f"TCP port to listen on (default: ${ENV_PREFIX}PORT, else 8501)."
        ),
    ] = None,
) -> None:
    """Serve the app until Ctrl+C or SIGTERM; migrates the database first if configured to.

    Exits with status 2 on a bad setting or a busy port, and 1 if the app cannot start.
    """
    overrides = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    try:
        config = load_config(**overrides)
    except ConfigError as err:
        fail(err, EXIT_USAGE)
    problem = port_problem(config.host, config.port)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        # Here rather than only in the lifespan, so that a broken database or migration is
        # reported as a message and an action instead of a server traceback.
        init_app(config)
    except ConfigError as err:
        fail(err, EXIT_USAGE)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    run_app(config.host, config.port, trusted_proxies=config.trusted_proxies)


def run_app(host: str, port: int, *, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve ``build_app()`` on host:port with the server options below; blocks until stopped.

    uvicorn (Streamlit's server) rewrites the client's address and scheme from
    ``X-Forwarded-*`` for the peers in ``FORWARDED_ALLOW_IPS``, 127.0.0.1 unless set: it gets
    ``STALWART_TRUSTED_PROXIES`` instead (none: no one), unless the operator set it.
    """
    os.environ.setdefault("FORWARDED_ALLOW_IPS", ",".join(trusted_proxies))
    # Imported here: Streamlit takes about a second to import and other commands don't need it.
    from stalwart.web.asgi import build_app
    from stalwart.web.server_tuning import enable_tcp_nodelay

    # Before run(): the listening socket is bound inside it. The heap is frozen later, in the
    # app's lifespan, so that `streamlit run app.py` and `uvicorn app:app` get that fix too.
    enable_tcp_nodelay()
    build_app().run(config=server_options(host, port))


def server_options(host: str, port: int) -> dict[str, Any]:
    """Streamlit config for serving: no browser, no usage statistics, no file watching."""
    return {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "browser.gatherUsageStats": False,
        "server.showEmailPrompt": False,
        # A served app changes by deploying and restarting, not by editing files under it;
        # watching the installed package would only cost CPU and inotify handles.
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        # The "You can now view your Streamlit app" banner is printed, not logged: every line
        # of the server's output is a JSON log line (uvicorn logs the address it listens on).
        "logger.hideWelcomeMessage": True,
        # Uncaught exceptions are logged with their traceback, not drawn as a rich panel.
        "logger.enableRich": False,
    }


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, or None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Bind as Streamlit will (SO_REUSEADDR except on Windows), so a port that is merely in
        # TIME_WAIT after a restart is not reported as busy.
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} is in use; pass --port or set {ENV_PREFIX}PORT"
            if err.errno == errno.EACCES:
                return (
                    f"not allowed to listen on port {port} (ports below 1024 need privileges); "
                    f"pass --port or set {ENV_PREFIX}PORT"
                )
            return (
                f"cannot listen on {host}:{port} ({err.strerror or err}); "
                f"pass --host or set {ENV_PREFIX}HOST"
            )
    return None
