"""The Grafana dashboard of manifests/monitoring: its queries parse as PromQL (promtool, no
cluster), and name only metrics that exist (the workers' and the operator's own)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from ingest_operator.metrics import IngestionIndex

from ingest_worker.metrics import Metrics
from tests.conftest import ROOT
from tests.monitoring.test_rules import promtool  # noqa: F401  (a fixture)

DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"


def queries() -> list[str]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_the_dashboard_shows_what_the_issue_lists() -> None:
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    for wanted in ("Rows per second", "Progress", "Error ratio", "Checkpoint lag",
                   "Kafka retry time"):
        assert any(t.startswith(wanted) for t in titles), titles


def test_every_query_parses(promtool: Path, tmp_path: Path) -> None:  # noqa: F811
    # promtool checks PromQL in rule files: each query as a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(queries())]}]}
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_metric_named_is_exported() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    operator = CollectorRegistry()
    index = IngestionIndex()
    index.set("ns", "a", {"phase": "InProgress", "bytesTotal": 1, "rowsPerSecond": 1.0,
                          "checkpoint": {"time": "2026-01-01T00:00:00Z"}})
    operator.register(index)
    exported = generate_latest(operator).decode() + generate_latest(Metrics().registry).decode()
    names = set(re.findall(r"^([a-z_:]+)[{ ]", exported, re.M))
    for q in queries():
        for metric in re.findall(r"\b((?:ingest_csv|csvkafka)_[a-z_]+)", q):
            assert metric in names, (metric, q)
