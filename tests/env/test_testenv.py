"""The local environment itself: a real control plane (Job controller, garbage collector, RBAC),
the pod runner that stands in for a kubelet, and a real Kafka broker."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.conftest import TestEnv, unique_name

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def wait_for_job(kubectl: Kubectl, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    """Waits for a Job to reach a terminal condition and returns it."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = json.loads(kubectl("-n", ns, "get", "job", name, "-o", "json").stdout)
        for cond in job.get("status", {}).get("conditions", []):
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                return job
        time.sleep(0.5)
    raise AssertionError(f"job {name} did not finish: {json.dumps(job.get('status'))}")


def job_manifest(name: str, code: str, backoff_limit: int = 0) -> str:
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": "python:3.11-slim",
                                "command": ["python", "-c", code],
                                "securityContext": restricted,
                            }
                        ],
                    }
                },
            },
        }
    )


def test_apiserver_ready(kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_crd_with_status_subresource(kubectl: Kubectl, namespace: str) -> None:
    group = f"{unique_name('g')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"ok": {"type": "boolean"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s")
        widget = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(widget))
        kubectl(
            "-n",
            namespace,
            "patch",
            f"widgets.{group}",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status": {"ok": true}}',
        )
        got = json.loads(
            kubectl("-n", namespace, "get", f"widgets.{group}", "w1", "-o", "json").stdout
        )
        assert got["spec"] == {"size": 3}
        assert got["status"] == {"ok": True}
    finally:
        kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_job_completes_through_the_job_controller(
    kubectl: Kubectl, namespace: str, testenv: TestEnv
) -> None:
    kubectl(
        "-n", namespace, "apply", "-f", "-", input=job_manifest("ok", "print('hello from a pod')")
    )
    job = wait_for_job(kubectl, namespace, "ok")
    assert job["status"].get("succeeded") == 1
    pods = json.loads(
        kubectl("-n", namespace, "get", "pods", "-l", "job-name=ok", "-o", "json").stdout
    )
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Succeeded"
    assert "hello from a pod" in testenv.pod_log(namespace, pod["metadata"]["name"]).read_text()


def test_failing_job_honours_backoff_limit(kubectl: Kubectl, namespace: str) -> None:
    kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=job_manifest("bad", "import sys; sys.exit(3)", backoff_limit=1),
    )
    job = wait_for_job(kubectl, namespace, "bad", timeout=120)
    assert job["status"].get("failed") == 2
    pods = json.loads(
        kubectl("-n", namespace, "get", "pods", "-l", "job-name=bad", "-o", "json").stdout
    )
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        assert pod["status"]["phase"] == "Failed"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_pod_runs_with_its_service_account_identity(
    kubectl: Kubectl, namespace: str, testenv: TestEnv
) -> None:
    code = (
        "import json, os, subprocess\n"
        "out = subprocess.run(['kubectl', 'auth', 'whoami', '-o', 'json'], capture_output=True,"
        " text=True)\n"
        "print('WHOAMI', out.stdout.replace(chr(10), ''), out.stderr)\n"
        "denied = subprocess.run(['kubectl', 'get', 'secrets'], capture_output=True, text=True)\n"
        "print('SECRETS-RC', denied.returncode)\n"
    )
    kubectl("-n", namespace, "apply", "-f", "-", input=job_manifest("who", code))
    wait_for_job(kubectl, namespace, "who")
    pod = kubectl(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        "job-name=who",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    log = testenv.pod_log(namespace, pod).read_text()
    assert f"system:serviceaccount:{namespace}:default" in log
    assert "SECRETS-RC 1" in log  # RBAC applies: the default ServiceAccount may not list secrets


def test_garbage_collector_deletes_owned_job(kubectl: Kubectl, namespace: str) -> None:
    owner = json.loads(
        kubectl("-n", namespace, "create", "configmap", "owner", "-o", "json").stdout
    )
    manifest = json.loads(job_manifest("owned", "import time; time.sleep(60)"))
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))
    kubectl("-n", namespace, "delete", "configmap", "owner")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if kubectl("-n", namespace, "get", "job", "owned", check=False).returncode != 0:
            return
        time.sleep(0.5)
    pytest.fail("the garbage collector did not delete the owned Job")


def test_kafka_round_trip_10k_messages(
    kafka_bootstrap: str, new_topic: Callable[..., str], consume_all: Callable[..., list[Any]]
) -> None:
    topic = new_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(10_000):
        producer.produce(topic, value=str(i).encode(), key=str(i % 97).encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    messages = consume_all(topic, 10_000)
    assert sorted(int(m.value()) for m in messages) == list(range(10_000))


def test_everything_listens_on_loopback_only(testenv: TestEnv) -> None:
    pids = {p.read_text().strip() for p in (testenv.state_dir / "run").glob("*.pid")}
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]
    assert ours, "found no listening socket of the environment's processes"
    for line in ours:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")), line
