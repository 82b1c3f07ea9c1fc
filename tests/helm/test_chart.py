"""The Helm chart beside the Kustomize base: generated from it (so the two cannot drift), linted,
rendered to the very objects of the base, and installed into the local cluster in a namespace
of its own, with the Kustomize install out of the way, where it runs the sample to Completed.

helm is built from its Go module (hack/build-helm.sh, cached).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import ROOT, TestEnv, built_tool, run_kubectl, unique_name
from tests.node import DataVolume
from tests.operator.conftest import OPERATOR_DEPLOY, OPERATOR_NS, wait_for
from tests.operator.test_operator import Ingestions

CHART = ROOT / "charts" / "csv-kafka"
# helm template renders for Kubernetes 1.20 unless told (the chart asks for 1.30+): the cluster's.
KUBE_VERSION = ("--kube-version", "1.37.2")


@pytest.fixture(scope="module")
def helm() -> Path:
    return built_tool("build-helm.sh")


def _kubectl(testenv: TestEnv) -> str:
    found = shutil.which("kubectl", path=testenv.environ["PATH"])
    assert found is not None
    return found


def _run(*cmd: str | Path, testenv: TestEnv, input: str | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=input,
                          env={**testenv.environ, "HOME": str(testenv.state_dir / "helm")})
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def _base(testenv: TestEnv) -> dict[tuple[str, str], dict[str, Any]]:
    base = _objects(_run(_kubectl(testenv), "kustomize", ROOT / "manifests", testenv=testenv))
    return {k: v for k, v in base.items() if k[0] != "Namespace"}


def test_the_chart_is_generated_from_the_kustomize_base(testenv: TestEnv) -> None:
    proc = subprocess.run([sys.executable, ROOT / "hack" / "chart.py", _kubectl(testenv),
                           "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_lint_and_the_default_render_is_the_base(helm: Path, testenv: TestEnv) -> None:
    out = _run(helm, "lint", CHART, "--strict", testenv=testenv)
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    rendered = _objects(_run(helm, "template", "csv-kafka", CHART, "--namespace",
                             OPERATOR_NS, "--include-crds", *KUBE_VERSION, testenv=testenv))
    base = _base(testenv)
    assert rendered.keys() == base.keys()
    for key, obj in base.items():
        assert rendered[key] == obj, key


def test_values_change_what_a_user_sets(helm: Path, testenv: TestEnv) -> None:
    rendered = _objects(_run(
        helm, "template", "ops", CHART, "--namespace", "ops", "--set", "image.repository=reg/csv",
        "--set", "image.tag=1.2.3", "--set", "admissionPolicy.enabled=false",
        "--set", "userRoles.enabled=false", "--set", "watchNamespaces=a\\,b",
        "--set", "resources.limits.memory=1Gi", *KUBE_VERSION, testenv=testenv))
    assert not [k for k in rendered if k[0].startswith("ValidatingAdmissionPolicy")]
    assert ("ClusterRole", "csvingestion-viewer") not in rendered
    deploy = rendered[("Deployment", OPERATOR_DEPLOY)]
    assert deploy["metadata"]["namespace"] == "ops"
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "reg/csv:1.2.3" and env["CSVKAFKA_WORKER_IMAGE"] == "reg/csv:1.2.3"
    assert env["CSVKAFKA_WATCH_NAMESPACES"] == "a,b"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    binding = rendered[("ClusterRoleBinding", "csvkafka-operator")]
    assert binding["subjects"][0]["namespace"] == "ops"


@pytest.fixture
def kustomize_out_of_the_way(testenv: TestEnv) -> Iterator[None]:
    """The Kustomize install removed but for its CRDs (and the ingestions they hold) and its
    namespace, then put back whatever the test does."""
    base = [d for d in _base(testenv).values() if d["kind"] != "CustomResourceDefinition"]
    manifest = "\n---\n".join(json.dumps(d) for d in base)
    _run(_kubectl(testenv), "delete", "--wait=true", "-f", "-", testenv=testenv, input=manifest)
    try:
        yield
    finally:
        subprocess.run(["bash", ROOT / "hack" / "testenv.sh", "operator-install"], check=True)


def test_helm_install_runs_the_sample_to_completed(
    helm: Path, testenv: TestEnv, kustomize_out_of_the_way: None, kube_api: client.ApiClient,
    namespace: str, data: DataVolume, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
) -> None:
    release_ns = unique_name("helm")
    repository, _, tag = testenv.image.rpartition(":")
    try:
        _run(helm, "install", "csv-kafka", CHART, "--namespace", release_ns,
             "--create-namespace", "--set", f"image.repository={repository}",
             "--set", f"image.tag={tag}", "--wait", "--timeout", "180s", testenv=testenv)
        pods = client.CoreV1Api(kube_api).list_namespaced_pod(
            release_ns, label_selector="app.kubernetes.io/name=csvkafka-operator").items
        assert [p.status.phase for p in pods] == ["Running", "Running"]  # the holder, a standby
        # The sample, with a file of the local environment and its broker.
        sample = yaml.safe_load((ROOT / "manifests" / "sample-csvingestion.yaml").read_text())
        rows = 5_000
        csv = data.path / "sales-2024.csv"
        csv.write_text("order_id,quantity,price\n"
                       + "".join(f"{i},{i % 9},{i % 100}.25\n" for i in range(rows)))
        spec = sample["spec"]
        spec["source"] = data.source(csv)
        spec["kafka"] |= {"bootstrapServers": testenv.kafka_bootstrap, "topic": new_topic(3),
                          "deadLetterTopic": new_topic(1)}
        spec["worker"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"},
                                       "limits": {"memory": "1Gi"}}
        sample["metadata"]["namespace"] = namespace
        ingestions = Ingestions(kube_api, namespace)
        ingestions.create(sample)
        st = ingestions.wait_phase("sales-2024", "Completed", timeout=180)
        assert st["rowsPublished"] == rows and st["rowsFailed"] == 0
        assert len(consume_all(spec["kafka"]["topic"], rows)) == rows
        logs = run_kubectl(testenv, "-n", release_ns, "logs", "-l",
                           "app.kubernetes.io/name=csvkafka-operator", "--tail=-1").stdout
        assert f"{namespace}/sales-2024" in logs  # this release's operator ran it
        wait_for("the Kustomize operator's absence", lambda: not client.AppsV1Api(
            kube_api).list_namespaced_deployment(OPERATOR_NS).items, timeout=5)
    finally:
        subprocess.run([str(helm), "uninstall", "csv-kafka", "--namespace", release_ns,
                        "--wait"], env={**testenv.environ,
                                        "HOME": str(testenv.state_dir / "helm")})
        client.CoreV1Api(kube_api).delete_namespace(release_ns)
