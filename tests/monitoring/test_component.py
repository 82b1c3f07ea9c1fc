"""The monitoring component (manifests/monitoring): what it selects, and what the API server
makes of it.

The pure tests check that the PodMonitors select the pods the operator's Deployment and
``builders`` make, on the port those pods name, and that the alerts match the ``job`` the
PodMonitors set. The cluster tests render the component over the base with Kustomize, as a user
adds it, and send its PodMonitors and PrometheusRule to the local API server in a server-side
dry run against prometheus-operator's own CRDs. The CRDs come from the prometheus-operator Go
module (``example/prometheus-operator-crd/``), not from this tree, and are applied server-side:
installed once, they stay (an apply of the same version changes nothing).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ingest_operator import builders

from ingest_worker.api.spec import CsvIngestionSpec
from tests.conftest import ROOT, TestEnv, run_kubectl

MONITORING = ROOT / "manifests" / "monitoring"
# The newest prometheus-operator root module the Go module proxy serves (v0.95.x answers 403).
PROMETHEUS_OPERATOR_VERSION = "v0.94.1"
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
CRDS = {
    "podmonitors.monitoring.coreos.com": "monitoring.coreos.com_podmonitors.yaml",
    "prometheusrules.monitoring.coreos.com": "monitoring.coreos.com_prometheusrules.yaml",
}
MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}
FIELD_MANAGER = "csvkafka-tests"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def component_objects() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for f in yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["resources"]:
        objs += [o for o in yaml.safe_load_all((MONITORING / f).read_text()) if o]
    return objs


def by_name(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = (o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    return obj


def meta_label(label: str) -> str:
    """The name Prometheus's pod discovery gives a pod label (Prometheus sanitizes it)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def rule_expressions() -> str:
    rule = by_name(component_objects(), "PrometheusRule", "csvkafka")
    return "\n".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])


# --- what the PodMonitors select (no cluster) --------------------------------------------------


def test_operator_podmonitor_selects_the_operator_pod() -> None:
    base = [o for o in yaml.safe_load_all((ROOT / "manifests" / "deployment.yaml").read_text())]
    deploy = by_name(base, "Deployment", "csvkafka-operator")
    template = deploy["spec"]["template"]
    mon = by_name(component_objects(), "PodMonitor", "csvkafka-operator")
    # Its own namespace (no namespaceSelector) is the operator's.
    assert mon["metadata"]["namespace"] == deploy["metadata"]["namespace"]
    assert "namespaceSelector" not in mon["spec"]
    assert mon["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in mon["spec"]["podMetricsEndpoints"]} <= ports
    # The `job` of its series is the pod's jobLabel value, which the alerts match on.
    job = template["metadata"]["labels"][mon["spec"]["jobLabel"]]
    assert f'job="{job}"' in rule_expressions()


def test_worker_podmonitor_selects_the_worker_pods() -> None:
    spec = CsvIngestionSpec.model_validate(
        {
            "source": {"url": "file:///data/a.csv"},
            "kafka": {"bootstrapServers": "k:9092", "topic": "rows"},
        }
    )
    pod = builders.build_job("sales", "data", spec, run=1, generation=1, default_image="i")["spec"][
        "template"
    ]
    pod_labels = pod["metadata"]["labels"]
    mon = by_name(component_objects(), "PodMonitor", "csv-ingest-worker")
    assert mon["spec"]["namespaceSelector"] == {
        "any": True
    }  # workers run beside their CsvIngestion
    assert mon["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == builders.WORKER_METRICS_PORT
    job = pod_labels[mon["spec"]["jobLabel"]]
    assert f'job="{job}"' in rule_expressions()
    # The alerts group by `ingestion`: the PodMonitor copies it from the operator's label.
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabel["ingestion"] == [meta_label(builders.LABEL_INGESTION)]
    assert relabel["run"] == [meta_label(builders.LABEL_RUN)]


# --- the component in the API server -----------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_operator_crds(testenv: TestEnv) -> None:
    """prometheus-operator's PodMonitor and PrometheusRule CRDs, from its Go module, served."""
    with tempfile.TemporaryDirectory() as tmp:  # outside any go.mod: a plain module download
        out = subprocess.run(
            [
                "go",
                "mod",
                "download",
                "-json",
                f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}",
            ],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
    crd_dir = Path(json.loads(out)["Dir"]) / "example" / "prometheus-operator-crd"
    for file in CRDS.values():
        path = crd_dir / file
        assert path.is_file(), (
            f"{PROMETHEUS_OPERATOR_MODULE} {PROMETHEUS_OPERATOR_VERSION} has no {path}"
        )
        run_kubectl(
            testenv,
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            str(path),
        )
    run_kubectl(
        testenv, "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS)
    )


def render(kubectl: Kubectl, overlay: Path, *, with_component: bool) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay over manifests/, as a user would write it."""
    overlay.mkdir(parents=True, exist_ok=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", overlay)],
    }
    if with_component:
        kustomization["components"] = [os.path.relpath(MONITORING, overlay)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return [o for o in yaml.safe_load_all(kubectl("kustomize", str(overlay)).stdout) if o]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def test_component_adds_only_its_objects(kubectl: Kubectl, tmp_path: Path) -> None:
    base = render(kubectl, tmp_path / "base", with_component=False)
    full = render(kubectl, tmp_path / "monitoring", with_component=True)
    added = [o for o in full if key(o) not in {key(b) for b in base}]
    assert sorted(key(o) for o in added) == [
        ("ConfigMap", "csvkafka-system", "csvkafka-grafana-dashboard"),
        ("PodMonitor", "csvkafka-system", "csv-ingest-worker"),
        ("PodMonitor", "csvkafka-system", "csvkafka-operator"),
        ("PrometheusRule", "csvkafka-system", "csvkafka"),
    ]
    # The base is left as it was.
    assert sorted((o for o in full if o not in added), key=key) == sorted(base, key=key)


def dry_run(kubectl: Kubectl, objs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        input=yaml.safe_dump_all(objs),
        check=False,
    )


def test_component_passes_a_server_side_dry_run(
    kubectl: Kubectl, prometheus_operator_crds: None, tmp_path: Path
) -> None:
    objs = [
        o for o in render(kubectl, tmp_path, with_component=True) if o["kind"] in MONITORING_KINDS
    ]
    assert len(objs) == 3
    # The environment installs manifests/ with the operator: its namespace is there.
    kubectl("get", "namespace", "csvkafka-system")
    proc = dry_run(kubectl, objs)
    assert proc.returncode == 0, proc.stderr
    for o in objs:
        assert f"{o['kind'].lower()}.monitoring.coreos.com/{o['metadata']['name']}" in proc.stdout


@pytest.mark.parametrize(
    ("kind", "breakage", "complaint"),
    [
        # A misspelt field: the CRD's schema is strict, and kubectl asks for strict validation.
        (
            "PodMonitor",
            lambda s: s.update(podMetricEndpoints=s.pop("podMetricsEndpoints")),
            "podMetricEndpoints",
        ),
        # A duration Prometheus could not read.
        (
            "PodMonitor",
            lambda s: s["podMetricsEndpoints"][0].update(interval="15 seconds"),
            "interval",
        ),
        # An alert without its expression.
        ("PrometheusRule", lambda s: s["groups"][0]["rules"][0].pop("expr"), "expr"),
    ],
)
def test_the_dry_run_rejects_a_broken_object(
    kubectl: Kubectl,
    prometheus_operator_crds: None,
    kind: str,
    breakage: Callable[[dict[str, Any]], object],
    complaint: str,
) -> None:
    """The dry run has teeth: the CRDs' schemas reject what prometheus-operator could not use."""
    obj = next(
        o
        for o in component_objects()
        if o["kind"] == kind and o["metadata"]["name"] != "csvkafka-operator"
    )
    breakage(obj["spec"])
    proc = dry_run(kubectl, [obj])
    assert proc.returncode != 0, proc.stdout
    assert complaint in proc.stderr
