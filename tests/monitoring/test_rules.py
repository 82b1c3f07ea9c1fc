"""The alerts of manifests/monitoring/prometheusrule.yaml, run by Prometheus's own promtool.

promtool reads plain rule files, so each test writes the PrometheusRule's ``spec`` (its
``groups``) to a rule file beside a copy of manifests/monitoring/tests/rules_test.yaml, whose
synthetic series give every alert a firing and a quiet case. promtool is built from the
Prometheus Go module by hack/build-promtool.sh (cached). No cluster is needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, built_tool

MONITORING = ROOT / "manifests" / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RULES_TEST = MONITORING / "tests" / "rules_test.yaml"
RULE_FILE = "prometheusrule.rules.yaml"  # the name rules_test.yaml's rule_files gives


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool, built into the cache (a no-op once built at the pinned version)."""
    return built_tool("build-promtool.sh")


def load_rule() -> dict[str, Any]:
    rule: dict[str, Any] = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    return rule


def alerts(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A directory with the PrometheusRule's groups as a plain rule file, and the test file."""
    (tmp_path / RULE_FILE).write_text(yaml.safe_dump(load_rule()["spec"], sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    return tmp_path


def run_promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_rules_pass_promtool_check(promtool: Path, rules_dir: Path) -> None:
    proc = run_promtool(promtool, "check", "rules", RULE_FILE, cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 4 rules found" in proc.stdout + proc.stderr


def test_alerts_pass_their_unit_tests(promtool: Path, rules_dir: Path) -> None:
    proc = run_promtool(promtool, "test", "rules", RULES_TEST.name, cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_promtool_fails_a_wrong_expectation(promtool: Path, rules_dir: Path) -> None:
    """The unit tests can fail: an alert expected where the series give none is reported."""
    cases = yaml.safe_load(RULES_TEST.read_text())
    cases["tests"] = [
        {
            "name": "a progressing worker is not stalled",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'ingest_csv_lines_total{job="csv-ingest-worker", namespace="n",'
                    ' ingestion="i", pod="i-1-x", status="read"}',
                    "values": "0+1000x40",
                },
                {
                    "series": 'up{job="csv-ingest-worker", namespace="n", ingestion="i",'
                    ' pod="i-1-x"}',
                    "values": "1x40",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "40m",
                    "alertname": "CsvIngestionStalled",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "n",
                                "ingestion": "i",
                                "pod": "i-1-x",
                            }
                        }
                    ],
                }
            ],
        }
    ]
    (rules_dir / "wrong_test.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    proc = run_promtool(promtool, "test", "rules", "wrong_test.yaml", cwd=rules_dir)
    assert proc.returncode != 0
    assert "CsvIngestionStalled" in proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """rules_test.yaml checks each alert both ways, and each alert is labelled and annotated."""
    cases = yaml.safe_load(RULES_TEST.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in cases["tests"]:
        for check in test.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts(load_rule())}
    assert names == {
        "CsvIngestionFailed",
        "CsvIngestionStalled",
        "CsvIngestionErrorRatioHigh",
        "CsvKafkaOperatorDown",
    }
    assert firing == names
    assert quiet == names
    for alert in alerts(load_rule()):
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert {"summary", "description"} <= alert["annotations"].keys(), alert["alert"]
        assert alert.get("for"), alert["alert"]
