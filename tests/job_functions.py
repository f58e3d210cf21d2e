"""Job functions for the job tests (imported by worker processes as ``tests.job_functions``).

Processes coordinate through files: a job waits for its ``gate`` file to appear, and counts its
calls in ``counter`` so a test can make it fail a given number of times.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from pydantic import BaseModel

from stalwart.core.jobs import Reporter, job_function


class AddArgs(BaseModel):
    a: int
    b: int


@job_function(args=AddArgs)
def add(args: AddArgs, reporter: Reporter) -> dict[str, int]:
    reporter.report(50, "adding")
    return {"sum": args.a + args.b}


class GateArgs(BaseModel):
    gate: str
    steps_after: int = 0


@job_function(args=GateArgs)
def wait_for_gate(args: GateArgs, reporter: Reporter) -> dict[str, str]:
    """Report 10% and wait (checking for cancel) until the gate file exists."""
    reporter.report(10, "waiting for the gate")
    while not Path(args.gate).exists():
        time.sleep(0.02)
        reporter.report(10, "waiting for the gate")
    for step in range(args.steps_after):
        time.sleep(0.02)
        reporter.report(10 + 90 * (step + 1) / args.steps_after, f"step {step + 1}")
    return {"gate": "open"}


class StepsArgs(BaseModel):
    steps: int = 10
    step_s: float = 0.1


@job_function(args=StepsArgs)
def steps(args: StepsArgs, reporter: Reporter) -> dict[str, int]:
    for step in range(args.steps):
        time.sleep(args.step_s)
        reporter.report(100 * (step + 1) / args.steps, f"step {step + 1} of {args.steps}")
    return {"steps": args.steps}


class StubbornArgs(BaseModel):
    seconds: float = 60.0


@job_function(args=StubbornArgs)
def stubborn(args: StubbornArgs, reporter: Reporter) -> str:
    """Never reports and ignores exceptions it can catch: only a hard stop ends it early."""
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            time.sleep(0.01)
    return "outlived"


@job_function(args=StubbornArgs)
def chatty(args: StubbornArgs, reporter: Reporter) -> str:
    """Reports progress without pause (100% is always written): it is nearly always inside a
    progress write when a hard stop comes."""
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        reporter.report(100, "still going")
    return "outlived"


class FailArgs(BaseModel):
    message: str = "boom"
    counter: str | None = None
    fail_times: int = 1_000_000


@job_function(args=FailArgs)
def flaky(args: FailArgs, reporter: Reporter) -> dict[str, int]:
    """Fail the first ``fail_times`` calls (counted in the counter file), then succeed."""
    calls = 1
    if args.counter:
        path = Path(args.counter)
        with path.open("a") as out:
            out.write("x\n")
        calls = len(path.read_text().splitlines())
    if calls <= args.fail_times:
        raise ValueError(args.message)
    return {"calls": calls}


def not_registered(args: AddArgs, reporter: Reporter) -> int:
    return 0
