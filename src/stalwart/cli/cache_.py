"""``app cache``: clear the shared cache, or show what it holds and how well it hits."""

from __future__ import annotations

from typing import Annotated

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE, fail
from stalwart.core.cache import Cache, CacheError
from stalwart.errors import StalwartError

cache_app = typer.Typer(help="The cache behind get_or_compute.", no_args_is_help=True)

_PER_PROCESS = (
    "STALWART_CACHE_BACKEND=memory: each app process holds its own cache, which a command "
    "line cannot reach."
)


@cache_app.command("clear")
def clear_command(
    namespace: Annotated[
        str | None, typer.Option(help="Only this namespace (default: everything).")
    ] = None,
) -> None:
    """Invalidate every cached value (or one namespace's) in every app process (Redis)."""
    cache = _shared_cache()
    try:
        cache.clear(namespace)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    except Exception as err:  # Redis unreachable
        fail(CacheError(f"The cache could not be cleared: {err}", _REDIS_ACTION), EXIT_FAILURE)
    finally:
        cache.close()
    typer.echo(f"cleared: {'namespace ' + repr(namespace) if namespace else 'everything'}")


@cache_app.command("stats")
def stats_command() -> None:
    """Hits, misses, invalidations and entries of the shared cache (Redis)."""
    cache = _shared_cache()
    try:
        shared = cache.shared_stats()
    except Exception as err:  # Redis unreachable
        fail(CacheError(f"The cache could not be read: {err}", _REDIS_ACTION), EXIT_FAILURE)
    finally:
        cache.close()
    hits, misses = shared.get("hits", 0), shared.get("misses", 0)
    ratio = f"{hits / (hits + misses):.1%}" if hits + misses else "-"
    typer.echo("backend: redis (all app processes)")
    typer.echo(f"hits: {hits}\nmisses: {misses}\nhit ratio: {ratio}")
    typer.echo(f"invalidations: {shared.get('invalidations', 0)}")
    typer.echo(f"entries: {shared.get('entries', 0)}")
    typer.echo(f"evicted by the server (all keys): {shared.get('server_evicted_keys', 0)}")


_REDIS_ACTION = "Check that Redis is running and STALWART_REDIS_URL is right."


def _shared_cache() -> Cache:
    ctx = cli_context()
    if ctx.config.cache_backend != "redis":
        fail(
            CacheError(
                _PER_PROCESS,
                "Restart the app processes to empty their caches; their counters are in "
                "their logs and metrics. Use STALWART_CACHE_BACKEND=redis to share one cache.",
            )
        )
    return ctx.cache
