"""The Grafana dashboard in docker/grafana: it parses, its panels are laid out and typed, and
every metric its queries name is one the app's registry exposes (scraped from a real
``Metrics`` with the cache, readiness and jobs collectors of a real app database)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stalwart.core.cache import Cache, MemoryBackend
from stalwart.core.database import DB
from stalwart.core.health import HealthChecks, HealthCollector, database_check
from stalwart.core.jobs import count_jobs
from stalwart.core.metrics import BuildInfo, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "stalwart.json"
PROVISIONING = ROOT / "docker" / "grafana" / "provisioning"
#: metric names in PromQL: ours, and the process collector's
_METRIC = re.compile(r"\b((?:stalwart|process)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exposed_names(db: DB, tmp_path: Path) -> set[str]:
    """Every sample name a scrape of the app's registry can hold."""
    metrics = Metrics(build=BuildInfo("1.2.3", "abc"))
    try:
        metrics.watch_cache(Cache(MemoryBackend()))
        metrics.watch_jobs(lambda: count_jobs(db))
        metrics.registry.register(HealthCollector(HealthChecks([database_check(db)]), tmp_path, 0))
        text = metrics.exposition().decode()
    finally:
        metrics.close()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def queries(data: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (panel["title"], target["expr"])
        for panel in data["panels"]
        for target in panel.get("targets", [])
    ]
    found += [(a["name"], a["expr"]) for a in data["annotations"]["list"] if "expr" in a]
    return found


def test_the_dashboard_parses_and_its_panels_are_complete() -> None:
    data = dashboard()
    assert data["uid"] == "stalwart-system"
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    for panel in panels:
        assert panel["datasource"]["type"] == "prometheus"
        assert panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    titles = {p["title"] for p in panels}
    assert {
        "Interaction p95 per page",
        "Errors per second by type",
        "DB retries and failures",
        "Jobs by status",
        "Oldest queued job age",
        "Active sessions",
        "Readiness per check",
    } <= titles
    (deployments,) = [a for a in data["annotations"]["list"] if a["name"] == "Deployments"]
    assert "stalwart_build_info" in deployments["expr"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_metric_the_dashboard_queries_is_exposed(db: DB, tmp_path: Path) -> None:
    exposed = exposed_names(db, tmp_path)
    used = {(title, name) for title, expr in queries(dashboard()) for name in _METRIC.findall(expr)}
    assert used
    missing = sorted((title, name) for title, name in used if name not in exposed)
    assert missing == []


def test_the_provisioning_files_point_at_the_dashboards() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "stalwart.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
