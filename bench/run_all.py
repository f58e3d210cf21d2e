"""The issue 5 benchmarks in one run: cache, write path, concurrent sessions.

    uv run python bench/run_all.py                 # about seven minutes
    uv run python bench/run_all.py --quick         # about two minutes, for a smoke run
    uv run python bench/run_all.py --profile 50    # and where Stalwart's CPU goes at N=50

Runs ``cache_bench``, ``write_bench`` and ``load_bench`` (see each for what it measures) under
one watchdog, prints a markdown report and writes it with the JSON: by default
``bench/results/suite.json`` and ``suite.md`` (``--quick``: ``bench/results/tmp/``, which git
ignores). Every target is marked met or missed. Talks only to 127.0.0.1 (the servers it
starts, PostgreSQL, Redis) and stops every server it started, also on Ctrl-C or the time
limit. ``bench/run_bench.py`` (Chromium) and ``bench/jobs_bench.py`` are separate runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cache_bench
import load_bench
import write_bench
from benchlib import BenchStop, default_out, now, run_info, target_table, watchdog, write_results
from run_bench import AUTH_MODES

PARTS = ("cache", "write", "load")  # quick ones first


def report(doc: dict[str, Any]) -> str:
    """Machine, the targets, then each part's tables."""
    m = doc["run"]
    lines = [
        f"# Stalwart benchmarks, {m['started_at']}{' (quick)' if doc['quick'] else ''}",
        "",
        f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, Streamlit {m['streamlit']}, "
        f"commit {m['git_commit'][:12]}{' (dirty)' if m['git_commit'].endswith('dirty') else ''}"
        f", load average at start {m['loadavg_at_start'][0]}.",
        "",
        "## Targets",
        "",
        target_table([t for part in PARTS for t in doc.get(part, {}).get("targets", [])]),
    ]
    reports: dict[str, Callable[[dict[str, Any]], str]] = {
        "cache": cache_bench.report,
        "write": write_bench.report,
        "load": load_bench.report,
    }
    for part in PARTS:
        if doc.get(part):
            lines += ["", reports[part](doc[part])]
    if "aborted" in doc:
        lines += ["", f"Aborted: {doc['aborted']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; print markdown; write the JSON and the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short levels, fewer samples")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of parts")
    parser.add_argument("--apps", default=",".join(load_bench.APPS), help="load: which apps")
    parser.add_argument("--levels", default=",".join(map(str, load_bench.LEVELS)))
    parser.add_argument("--seconds", type=float, help="load: timed seconds per level and app")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="load: N sessions on Stalwart under py-spy"
    )
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="local",
        help="load: Stalwart's sign-in, local (plus a stalwart-auth-off row) or off",
    )
    parser.add_argument("--time-limit", type=float, help="watchdog (default 900 s, quick 300 s)")
    parser.add_argument("--out", type=Path, help="JSON path (the markdown goes beside it)")
    args = parser.parse_args(argv)
    out = args.out or default_out("suite", args.quick)
    parts = [p for p in PARTS if p in args.only.split(",")]
    doc: dict[str, Any] = {"run": run_info(), "quick": args.quick, **{p: {} for p in parts}}
    try:
        with watchdog(args.time_limit or (300.0 if args.quick else 900.0)):
            for part in parts:
                print(f"=== {part}", file=sys.stderr, flush=True)
                if part == "cache":
                    cache_bench.run(doc["cache"], quick=args.quick)
                elif part == "write":
                    write_bench.run(doc["write"], quick=args.quick)
                else:
                    load_bench.run(
                        doc["load"],
                        quick=args.quick,
                        apps=[a for a in args.apps.split(",") if a in load_bench.APPS],
                        levels=[int(n) for n in args.levels.split(",")],
                        seconds=args.seconds,
                        profile=args.profile,
                        auth=args.auth,
                    )
    except BenchStop as stop:
        doc["aborted"] = str(stop)
    doc["run"]["finished_at"] = now()
    markdown = report(doc)
    write_results(doc, markdown, out)
    print(markdown)
    print(f"\n(written to {out} and {out.with_suffix('.md')})")
    return 1 if "aborted" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
