"""docker/prometheus: the alert rules pass Prometheus's own checks and unit tests (promtool),
every alert carries its remediation and a runbook that exists, and the embedded dispatcher
knows the same alerts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stalwart.core.alerts import default_rules
from tests.conftest import ROOT, need, promtool_problem

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
OPERATIONS = ROOT / "OPERATIONS.md"
#: what the issue asks alerts for, by the name each has
REQUIRED = {
    "InteractionLatencyHigh",
    "ErrorRateHigh",
    "ReadinessFailing",
    "JobFailureRateHigh",
    "JobQueueStuck",
    "DatabaseRetriesSpike",
    "BackupTooOld",
    "RestoreDrillFailed",
    "DiskSpaceLow",
}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    need("promtool", promtool_problem())
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", "alerts.yml")

    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = promtool("test", "rules", "alerts_test.yml")

    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_checks_the_scrape_config() -> None:
    # --syntax-only: the metrics token file exists only where Prometheus runs.
    out = promtool("check", "config", "--syntax-only", "prometheus.yml")

    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_remediation_and_a_runbook_that_exists() -> None:
    rules = alert_rules()
    anchors = github_anchors(OPERATIONS.read_text())

    assert {rule["alert"] for rule in rules} >= REQUIRED
    for rule in rules:
        notes = rule["annotations"]
        assert {"summary", "description", "remediation", "runbook"} <= set(notes), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "OPERATIONS.md"
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in OPERATIONS.md"


def test_the_embedded_dispatcher_knows_the_same_alerts_and_runbooks() -> None:
    in_prometheus = {rule["alert"]: rule for rule in alert_rules()}
    embedded = {rule.name: rule for rule in default_rules()}

    assert set(embedded) == set(in_prometheus)
    for name, rule in embedded.items():
        assert rule.severity == in_prometheus[name]["labels"]["severity"], name
        assert rule.runbook == in_prometheus[name]["annotations"]["runbook"], name
