"""The write path: ``FormService.persist_input`` until its row is committed, on SQLite and
PostgreSQL.

    uv run python bench/write_bench.py            # about half a minute
    uv run python bench/write_bench.py --quick    # a few seconds

What a form widget's change costs on the server (``widgets/forms.py`` calls it the same way,
with the UI's retry policy): one transaction that locks the draft row, applies the change to
the FormState and writes it back. The database is opened as the app opens it
(``DB.from_config``: SQLite in WAL mode with ``synchronous=FULL``, a fresh file in a temporary
directory; PostgreSQL: a scratch database at ``STALWART_BENCH_PG_URL``, dropped afterwards),
migrated, with one browser session. One thread makes the calls, as one user does:

- **typed**: one more character in the demo form's summary (``typed=True``, as the journal
  sends keystrokes; up to 300 characters, then it starts again);
- **select**: the next status (every fifth call).

Each call is timed until it returns, which is after the commit. After the run the draft is
read back through a new engine (a new connection) and must hold the last values written, so
the numbers are of committed rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import (
    ms_cell,
    part_main,
    prepare_like_the_app,
    scratch_postgres,
    stats,
    timed_ms,
)
from sqlalchemy import select

from stalwart.core.config import load_config
from stalwart.core.database import DB
from stalwart.core.form_state import FormState
from stalwart.core.migrations import migrate
from stalwart.models import FormDraft, SessionRecord
from stalwart.pages.form_demo import DEFAULTS, STATUSES
from stalwart.services.form_service import FormService
from stalwart.widgets.forms import UI_RETRY

SESSION = "bench-session"
FORM = "project_brief:1"
SELECT_EVERY = 5
SUMMARY_CHARS = 300  # the summary is typed up to this length, then cleared and typed again


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (sqlite, postgresql), removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'write-bench.db'}"
    else:
        with scratch_postgres("stalwart_write_bench") as url:
            yield url


def measure(url: str, tmp: Path, n: int, budget_s: float) -> dict[str, Any]:
    """``n`` persist_input calls (or ``budget_s``), timed; then the row read back."""
    db = DB.from_config(load_config(database_url=url, data_dir=tmp / "data"))
    try:
        migrate(db)
        db.run_tx(lambda uow: uow.session.add(SessionRecord(id=SESSION, page="form-demo")))
        service = FormService(db, retry=UI_RETRY)
        samples: dict[str, list[float]] = {"typed": [], "select": []}
        statuses = itertools.cycle(STATUSES[1:] + STATUSES[:1])
        text, status = "", STATUSES[0]
        deadline = time.monotonic() + budget_s
        for i in range(n):
            if time.monotonic() > deadline:
                break
            if i % SELECT_EVERY == SELECT_EVERY - 1:
                status = next(statuses)
                field, value, typed, kind = "status", status, False, "select"
            else:
                text = "x" if len(text) >= SUMMARY_CHARS else text + "x"
                field, value, typed, kind = "summary", text, True, "typed"
            call = partial(service.persist_input, SESSION, FORM, DEFAULTS, field, value)
            samples[kind].append(timed_ms(partial(call, typed=typed, tab="bench")))
    finally:
        db.dispose()
    committed = read_back(url)
    expected = {"summary": text, "status": status}
    return {
        "calls": sum(len(s) for s in samples.values()),
        "all": stats(samples["typed"] + samples["select"]),
        **{kind: stats(s) for kind, s in samples.items()},
        "committed": {k: committed["data"].get(k) == v for k, v in expected.items()},
        "draft_json_bytes": committed["bytes"],
    }


def read_back(url: str) -> dict[str, Any]:
    """The draft as a new connection sees it: its data and the size of its JSON."""
    db = DB(url)
    try:
        with db.get_conn() as conn:
            raw = conn.execute(
                select(FormDraft.state).where(
                    FormDraft.session_id == SESSION, FormDraft.form_id == FORM
                )
            ).scalar_one()
    finally:
        db.dispose()
    return {"data": FormState.from_json(FORM, raw).data, "bytes": len(json.dumps(raw))}


def run(doc: dict[str, Any], *, quick: bool) -> None:
    """Both databases into ``doc`` (kept if the run is stopped); targets at the end."""
    prepare_like_the_app()
    n, budget_s = (200, 10.0) if quick else (2_000, 40.0)
    doc.update({"settings": {"calls": n, "budget_s": budget_s}, "databases": {}})
    try:
        with tempfile.TemporaryDirectory(prefix="stalwart-write-") as tmpdir:
            for kind in ("sqlite", "postgresql"):
                print(f"== write path: {kind}", file=sys.stderr, flush=True)
                try:
                    with database(kind, Path(tmpdir)) as url:
                        doc["databases"][kind] = measure(url, Path(tmpdir), n, budget_s)
                except Exception as err:
                    doc["databases"][kind] = {"error": f"{type(err).__name__}: {err}"}
    finally:
        doc["targets"] = [
            {
                "target": f"every call's row committed ({kind})",
                "value": r.get("error") or r["committed"],
                "met": "error" not in r and all(r["committed"].values()),
            }
            for kind, r in doc["databases"].items()
        ]


def report(doc: dict[str, Any]) -> str:
    """The write results as markdown."""
    keys = ("p50", "p99", "max")
    lines = [
        "## Write path (`FormService.persist_input` to committed row, one thread)",
        "",
        "ms p50 / p99 / max; SQLite with `synchronous=FULL` (an fsync per commit).",
        "",
        "| database | calls | all | typed (summary) | select (status) | draft JSON |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in doc.get("databases", {}).items():
        if "error" in r:
            lines.append(f"| {kind} | error: {r['error']} |")
            continue
        lines.append(
            f"| {kind} | {r['calls']} | {ms_cell(r['all'], keys)} | {ms_cell(r['typed'], keys)} "
            f"| {ms_cell(r['select'], keys)} | {r['draft_json_bytes']} bytes |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run; print markdown; write results/write.json and write.md."""
    return part_main(
        "write",
        __doc__.splitlines()[0],
        lambda results, quick: run(results, quick=quick),
        report,
        quick_help="200 calls, for a smoke run",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
