"""``app health``: the readiness report (/readyz's checks) for a person or a container runtime."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE
from stalwart.core.logs import traceparent

EXIT_READY = 0
#: /readyz statuses of a ready process ("degraded": a non-critical check fails)
READY_STATUSES = frozenset({"ok", "degraded"})


def health_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON object.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            help=(
                "Ask a running server's /readyz (e.g. http://127.0.0.1:8501/readyz) instead of "
                "running the checks in this process: also proves the server answers."
            ),
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="With --url: seconds to wait for the answer.", min=0.1)
    ] = 10.0,
) -> None:
    """Run the readiness checks and print them; exit 0 when ready (degraded included: a
    non-critical check such as the cache's Redis fails), 1 when not.

    Checks: database (a round trip), migrations (schema at head), filesystem (the data
    directory takes a write and has STALWART_MIN_FREE_BYTES free), cache (Redis answers, if
    used), jobs (Redis for rq; the embedded engine is checked by the server itself, --url).
    """
    report = _ask(url, timeout) if url else _check_here()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
    raise typer.Exit(EXIT_READY if report.get("status") in READY_STATUSES else EXIT_FAILURE)


def _check_here() -> dict[str, Any]:
    from stalwart.monitoring import health_checks

    ctx = cli_context()
    return health_checks(ctx).run().as_dict(full=True)


def _ask(url: str, timeout: float) -> dict[str, Any]:
    """/readyz's answer (200 or 503 both carry the report), or a report saying it did not come."""
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("use an http:// or https:// URL", param_hint="--url")
    try:
        # traceparent: the server's log lines for this request carry our trace id
        request = urllib.request.Request(url, headers={"traceparent": traceparent()})  # noqa: S310
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"status": "unreachable", "error": f"{url} did not answer: {reason}", "checks": {}}
    try:
        answer = json.loads(body)
    except ValueError:
        return {"status": "unreachable", "error": f"{url} did not answer JSON", "checks": {}}
    return answer if isinstance(answer, dict) else {"status": "unreachable", "checks": {}}


def _print_table(report: dict[str, Any]) -> None:
    checks: dict[str, dict[str, Any]] = report.get("checks") or {}
    rows = [("check", "status", "latency_ms", "detail")]
    for name, entry in checks.items():
        parts = [entry.get("error"), entry.get("detail")]
        if entry.get("error_id"):
            parts.append(f"(error id {entry['error_id']})")
        detail = " ".join(str(p) for p in parts if p)
        latency = entry.get("latency_ms")
        rows.append(
            (name, str(entry.get("status")), "" if latency is None else f"{latency:.1f}", detail)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        typer.echo("  ".join([*cells, row[3]]).rstrip())
    status = report.get("status")
    if report.get("error"):
        typer.echo(f"error: {report['error']}", err=True)
    typer.echo(f"ready: {'yes' if status in READY_STATUSES else 'no'} ({status})")
