"""The local environment itself: a real control plane (Job controller, garbage collector, RBAC),
a real node (kubelet, containerd, kube-proxy) running pods from the image built from this tree,
and a real Kafka broker."""

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


def job_manifest(image: str, name: str, code: str, backoff_limit: int = 0) -> str:
    """A restricted Job running ``python -c code`` in ``image``."""
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
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
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
        "-n", namespace, "apply", "-f", "-",
        input=job_manifest(testenv.image, "ok", "print('hello from a pod')"),
    )
    job = wait_for_job(kubectl, namespace, "ok")
    assert job["status"].get("succeeded") == 1
    pods = json.loads(
        kubectl("-n", namespace, "get", "pods", "-l", "job-name=ok", "-o", "json").stdout
    )
    (pod,) = pods["items"]
    assert pod["status"]["phase"] == "Succeeded"
    assert "hello from a pod" in kubectl("-n", namespace, "logs", "job/ok").stdout


def test_failing_job_honours_backoff_limit(
    kubectl: Kubectl, namespace: str, testenv: TestEnv
) -> None:
    kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=job_manifest(testenv.image, "bad", "import sys; sys.exit(3)", backoff_limit=1),
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
    # The in-cluster config: the `kubernetes` Service (kube-proxy) and the projected token.
    code = (
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "me = client.AuthenticationV1Api().create_self_subject_review("
        "client.V1SelfSubjectReview())\n"
        "print('WHOAMI', me.status.user_info.username)\n"
        "try:\n"
        "    client.CoreV1Api().list_namespaced_secret(open("
        "'/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())\n"
        "except client.ApiException as e:\n"
        "    print('SECRETS', e.status)\n"
    )
    kubectl("-n", namespace, "apply", "-f", "-", input=job_manifest(testenv.image, "who", code))
    wait_for_job(kubectl, namespace, "who")
    log = kubectl("-n", namespace, "logs", "job/who").stdout
    assert f"WHOAMI system:serviceaccount:{namespace}:default" in log, log
    assert "SECRETS 403" in log  # RBAC applies: the default ServiceAccount may not list secrets


def test_garbage_collector_deletes_owned_job(
    kubectl: Kubectl, namespace: str, testenv: TestEnv
) -> None:
    owner = json.loads(
        kubectl("-n", namespace, "create", "configmap", "owner", "-o", "json").stdout
    )
    manifest = json.loads(job_manifest(testenv.image, "owned", "import time; time.sleep(60)"))
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
