"""Print each failed or errored test of a JUnit XML report with the head and tail of its error.

``.ci/run`` calls it after a failing test run, so the reason of each failure is the last thing
on screen (the full report, with server logs and browser journals, is above it).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

HEAD, TAIL = 12, 25


def main(path: str) -> None:
    root = ET.parse(path).getroot()  # noqa: S314 - our own pytest run wrote it
    for case in root.iter("testcase"):
        for problem in [*case.findall("failure"), *case.findall("error")]:
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            print(f"--- {problem.tag.upper()} {name}")
            print("    " + " / ".join(problem.get("message", "").splitlines())[:500])
            lines = (problem.text or "").splitlines()
            shown = lines if len(lines) <= HEAD + TAIL else [*lines[:HEAD], "...", *lines[-TAIL:]]
            for line in shown:
                print(f"    {line[:300]}")


if __name__ == "__main__":
    main(sys.argv[1])
