"""The suite-wide log check: every log line written while the tests run is a JSON object with
every field of ``stalwart.core.logs.LINE_FIELDS``; else the run fails, showing the first bad
lines and where they were written.

Where lines are collected:

- in this process: every line our chain renders as JSON (``ProcessorFormatter.format`` is
  wrapped; text-mode loggers of tests of the text renderer are not JSON by choice);
- files of child processes, registered with ``watch_log_file`` by the helpers that start them
  (each ``LiveApp``'s ``server.log``, job workers' logs): every line, checked at the end;
- the stderr of ``app`` CLI subprocesses run with ``subprocess.run``: the CLI's messages to its
  user are text by design, so only lines that look like log output (a JSON object, a
  ``Traceback``, a ``2026-01-01 12:00:00 ...`` or ``INFO:`` prefix) are checked there.

Lines are checked as they come (in-process) or once at the end (files), and only the first
offenders are kept: it costs a ``json.loads`` per line.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import structlog

from stalwart.core.logs import LINE_FIELDS

#: how many offending lines are kept and shown
SHOWN: Final = 20
_LOOKS_LIKE_LOG: Final = re.compile(
    r"^(?:\{|Traceback \(most recent call last\)|\d{4}-\d\d-\d\d[ T]\d\d:\d\d"
    r"|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ])"
)


def line_problem(line: str) -> str | None:
    """Why ``line`` is not a valid log line (a JSON object with every field), or None."""
    try:
        value = json.loads(line)
    except ValueError:
        return "not JSON"
    if not isinstance(value, dict):
        return "not a JSON object"
    missing = [key for key in LINE_FIELDS if key not in value]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


@dataclass
class Offence:
    """One bad line: where it was written, which line, what is wrong, the line itself."""

    source: str
    number: int
    problem: str
    line: str

    def __str__(self) -> str:
        shown = self.line if len(self.line) <= 300 else self.line[:300] + "..."
        return f"{self.source}:{self.number}: {self.problem}: {shown}"


@dataclass
class LogCheck:
    """Collects log lines and their offences over a test session."""

    checked: int = 0
    offences: list[Offence] = field(default_factory=list)
    bad: int = 0
    files: dict[Path, str] = field(default_factory=dict)

    def check(self, lines: Iterable[str], source: str, *, only_log_like: bool = False) -> None:
        """Check ``lines`` (blank lines are skipped) written by ``source``."""
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or (only_log_like and not _LOOKS_LIKE_LOG.match(text)):
                continue
            self.checked += 1
            problem = line_problem(text)
            if problem is not None:
                self.bad += 1
                if len(self.offences) < SHOWN:
                    self.offences.append(Offence(source, number, problem, text))

    def watch(self, path: Path, source: str) -> None:
        """Check the lines of the file at ``path`` at the end of the session."""
        self.files[path] = source

    def check_files(self) -> None:
        """Check every watched file that exists (once each)."""
        for path, source in self.files.items():
            if path.exists():
                with path.open(encoding="utf-8", errors="replace") as lines:
                    self.check(lines, f"{source} {path}")
        self.files.clear()

    def report(self) -> list[str]:
        """What to print: a summary line and the first offending lines (none if all is well)."""
        if not self.bad:
            return []
        return [
            f"log check: {self.bad} of {self.checked} log line(s) are not JSON objects with the"
            f" fields {', '.join(LINE_FIELDS)}; the first:",
            *(f"  {offence}" for offence in self.offences),
        ]


_check = LogCheck()
_INSTALLED: list[tuple[Any, str, Any]] = []


def watch_log_file(path: Path, source: str) -> None:
    """Check every line of the file at ``path`` (a child process's log) at the end of the run."""
    _check.watch(Path(path), source)


def _install() -> None:
    formatter = structlog.stdlib.ProcessorFormatter
    format_line = formatter.format

    def collecting_format(self: Any, record: Any) -> str:
        text: str = format_line(self, record)
        if isinstance(self.processors[-1], structlog.processors.JSONRenderer):
            _check.check(text.splitlines() or [text], f"in-process logger {record.name}")
        return text

    run = subprocess.run

    def collecting_run(*args: Any, **kwargs: Any) -> Any:
        done = run(*args, **kwargs)
        command = args[0] if args else kwargs.get("args")
        if _is_cli(command) and isinstance(done.stderr, str | bytes):
            stderr = done.stderr if isinstance(done.stderr, str) else done.stderr.decode("utf-8")
            at = [str(part) for part in command].index("stalwart.cli.main")
            name = " ".join(["app", *(str(part) for part in command[at + 1 : at + 3])])
            _check.check(stderr.splitlines(), f"stderr of `{name}`", only_log_like=True)
        return done

    _INSTALLED.extend([(formatter, "format", format_line), (subprocess, "run", run)])
    formatter.format = collecting_format  # type: ignore[method-assign]
    subprocess.run = collecting_run


def _is_cli(command: Any) -> bool:
    return (
        isinstance(command, Sequence)
        and not isinstance(command, str | bytes)
        and any(str(part) == "stalwart.cli.main" for part in command)
    )


def pytest_configure(config: pytest.Config) -> None:
    """Start collecting (once, in the main pytest process)."""
    if not _INSTALLED:
        _install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Check the watched files; fail the run if any line was bad.

    Under pytest-xdist a worker hands its counts and first offences to the controller
    (``workeroutput``), which adds them up in ``pytest_testnodedown`` before this runs there.
    """
    _check.check_files()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["log_check"] = {
            "checked": _check.checked,
            "bad": _check.bad,
            "offences": [vars(offence) for offence in _check.offences],
        }
        return
    if _check.bad and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """(xdist controller) Add a finished worker's log check to the run's."""
    found = getattr(node, "workeroutput", {}).get("log_check")
    if not found:
        return
    _check.checked += found["checked"]
    _check.bad += found["bad"]
    room = SHOWN - len(_check.offences)
    _check.offences.extend(Offence(**offence) for offence in found["offences"][:room])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the first offending lines, with where they were written."""
    lines = _check.report()
    if lines:
        terminalreporter.section("log check", sep="=", red=True, bold=True)
        for line in lines:
            terminalreporter.write_line(line)
