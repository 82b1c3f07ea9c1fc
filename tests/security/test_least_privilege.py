"""Least privilege and hardening, checked against the real API server (RBAC and Pod Security
admission on): what the operator's and the worker's identities can do, that worker and operator
pods meet the `restricted` Pod Security level, and that no secret value leaks into a log, the
resource's status or an event."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import ROOT, TestEnv
from tests.node import DataVolume, pod_logs
from tests.operator.conftest import (
    OPERATOR_NS,
    OPERATOR_SA,
    OperatorDeployment,
    run_kubectl,
    wait_for,
    write_csv,
)
from tests.operator.test_operator import Ingestions, ingestion

# What the operator may do, everywhere (a ClusterRole): resource -> verbs. Anything more (or
# less) fails the test, so a new permission is a deliberate, reviewed change.
OPERATOR_EXPECTED: dict[str, set[str]] = {
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
    "namespaces": {"list", "watch"},
    "csvingestions.csvkafka.io": {"get", "list", "watch", "patch"},
    "csvingestions.csvkafka.io/status": {"get", "patch", "update"},
    "csvingestionplans.csvkafka.io": {"get", "create", "update"},
    "jobs.batch": {"get", "list", "watch", "create", "delete"},
    "pods": {"list"},  # a failed Job's pods, for an OOM kill
    "serviceaccounts": {"get", "create"},
    "roles.rbac.authorization.k8s.io": {"get", "create"},
    "rolebindings.rbac.authorization.k8s.io": {"get", "create"},
    "events": {"create", "patch"},
    "events.events.k8s.io": {"create", "patch"},
}
# And in its own namespace only (a Role): its Lease, for leader election. `create` cannot name
# the object; the rest is this one Lease.
OPERATOR_LEASE: dict[str, set[str]] = {
    "leases.coordination.k8s.io": {"create"},
    "leases.coordination.k8s.io[csvkafka-operator]": {"get", "update"},
}
# Granted to every authenticated identity by the API server's default roles.
BUILTIN = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    # Readable by every authenticated identity since Kubernetes 1.33 (system:basic-user).
    "clustertrustbundles.certificates.k8s.io",
}
# Asked one by one as well: resource -> verbs the operator must never have.
NEVER: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("secrets", "pods/exec", "configmaps", "clusterroles", "clusterrolebindings"),
        ("get", "list", "create"),
    ),
    # Read, never written: the operator changes pods only through their Jobs.
    "pods": ("create", "update", "patch", "delete", "deletecollection"),
}


_ROW = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_i_list(testenv: TestEnv, namespace: str, user: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list`` as ``user``: ``resource`` or ``resource[name]`` -> verbs.

    Non-resource URL rules (/healthz, /api, ...) are the API server's defaults for everyone and
    are left out."""
    table = run_kubectl(testenv, "-n", namespace, "auth", "can-i", "--list", "--as", user).stdout
    got: dict[str, set[str]] = {}
    for line in table.splitlines()[1:]:
        m = _ROW.match(line)
        if m is None:
            continue  # a non-resource URL row (no resource column)
        res, _urls, names, verbs = m.groups()
        for name in names.split() or [None]:
            key = res if name is None else f"{res}[{name}]"
            got.setdefault(key, set()).update(verbs.split())
    return got


def _normalise(rules: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: v for k, v in rules.items() if k.split("[")[0] not in BUILTIN}


def test_operator_rbac_is_exactly_the_expected_set(
    operator_kubeconfig: Path, testenv: TestEnv, namespace: str
) -> None:
    user = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
    got = _normalise(can_i_list(testenv, namespace, user))
    print("operator can-i --list:", json.dumps({k: sorted(v) for k, v in got.items()}, indent=1))
    assert got == OPERATOR_EXPECTED
    for res, verbs in NEVER.items():
        for verb in verbs:
            # `can-i VERB pods/exec` would ask for a pod named "exec": name the subresource.
            resource, _, sub = res.partition("/")
            extra = ["--subresource", sub] if sub else []
            proc = run_kubectl(testenv, "-n", namespace, "auth", "can-i", verb, resource, *extra,
                               "--as", user, check=False)
            assert proc.stdout.strip() == "no", f"operator may {verb} {res}"


def test_operator_keeps_its_lease_in_its_own_namespace_only(
    operator_kubeconfig: Path, testenv: TestEnv, namespace: str
) -> None:
    user = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
    got = _normalise(can_i_list(testenv, OPERATOR_NS, user))
    assert got == OPERATOR_EXPECTED | OPERATOR_LEASE
    # Elsewhere no Lease at all (the test above: exactly OPERATOR_EXPECTED), and here no other
    # Lease, and never a list, watch or delete of one.
    asks = [("update", "leases/another", OPERATOR_NS), ("get", "leases/another", OPERATOR_NS),
            ("create", "leases", namespace), ("get", "leases/csvkafka-operator", namespace),
            *((verb, "leases", OPERATOR_NS) for verb in ("list", "watch", "delete"))]
    for verb, what, ns in asks:
        proc = run_kubectl(testenv, "-n", ns, "auth", "can-i", verb,
                           what.replace("leases", "leases.coordination.k8s.io", 1),
                           "--as", user, check=False)
        assert proc.stdout.strip() == "no", f"operator may {verb} {what} in {ns}"


def test_worker_identity_touches_only_its_own_status(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, namespace: str,
) -> None:
    missing = "file:///nowhere/none.csv"
    ingestions.create(ingestion("mine", missing, "t", testenv.kafka_bootstrap))
    ingestions.create(ingestion("other", missing, "t", testenv.kafka_bootstrap))
    user = f"system:serviceaccount:{namespace}:mine-worker"
    got = wait_for("the worker's Role", lambda: _normalise(can_i_list(testenv, namespace, user))
                   or None, timeout=60)
    print("worker can-i --list:", json.dumps({k: sorted(v) for k, v in got.items()}, indent=1))
    assert got == {
        "csvingestions.csvkafka.io[mine]": {"get"},
        "csvingestions.csvkafka.io/status[mine]": {"get", "patch", "update"},
        "csvingestionplans.csvkafka.io[mine]": {"get", "update"},
    }


def _pod_of(ingestions: Ingestions, job: str) -> client.V1Pod:
    pods: list[client.V1Pod] = wait_for(
        "the worker pod", lambda: ingestions.worker_pods(job), timeout=60)
    return pods[0]


def test_worker_pod_passes_restricted_and_is_hardened(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, namespace: str,
    data: DataVolume, new_topic: Callable[..., str], kube_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube_api)
    labels = core.read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    csv = write_csv(data.path / "small.csv", 100)
    ingestions.create(ingestion("hard", data.source(csv), new_topic(partitions=1),
                                testenv.kafka_bootstrap))
    pod = _pod_of(ingestions, "hard-1")  # admitted in a `restricted` namespace
    spec = pod.spec
    assert spec.security_context.run_as_non_root is True
    assert (spec.security_context.run_as_user or 0) != 0
    assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
    for c in spec.containers:
        sc = c.security_context
        assert sc.read_only_root_filesystem is True, c.name
        assert sc.allow_privilege_escalation is False, c.name
        assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add, c.name
    assert not spec.host_network and not spec.host_pid and not spec.host_ipc
    ingestions.wait_phase("hard", "Completed", timeout=120)
    # The control: the same namespace refuses a pod that is not restricted.
    bad = client.V1Pod(
        metadata=client.V1ObjectMeta(name="root-pod"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image="x", security_context=client.V1SecurityContext(privileged=True))]),
    )
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, bad, dry_run="All")
    assert refused.value.status == 403 and "restricted" in refused.value.body


def test_operator_deployment_pod_passes_restricted(
    crd_installed: None, testenv: TestEnv, namespace: str, kube_api: client.ApiClient
) -> None:
    built = run_kubectl(testenv, "kustomize", str(ROOT / "manifests")).stdout
    dep = next(d for d in yaml.safe_load_all(built) if d and d["kind"] == "Deployment")
    ns_doc = next(d for d in yaml.safe_load_all(built) if d and d["kind"] == "Namespace")
    assert ns_doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    template: dict[str, Any] = dep["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "operator-dry-run", "namespace": namespace},
           "spec": {**template["spec"], "serviceAccountName": "default"}}
    proc = run_kubectl(testenv, "-n", namespace, "create", "--dry-run=server", "-f", "-",
                       input=json.dumps(pod), check=False)
    assert proc.returncode == 0, proc.stderr
    for c in template["spec"]["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_no_secret_value_in_logs_status_or_events(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, namespace: str,
    data: DataVolume, new_topic: Callable[..., str], kube_api: client.ApiClient,
) -> None:
    token = "s3cr3t-" + secrets.token_hex(16)
    aws = "AKIA" + secrets.token_hex(8).upper()
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="kafka-creds"),
        string_data={"sasl.username": "user", "sasl.password": token}))
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="src-creds"),
        string_data={"AWS_ACCESS_KEY_ID": aws, "AWS_SECRET_ACCESS_KEY": token}))
    csv = write_csv(data.path / "s.csv", 500)
    topic = new_topic(partitions=1)
    body = ingestion("sec", data.source(csv), topic, testenv.kafka_bootstrap)
    body["spec"]["kafka"]["secretRef"] = {"name": "kafka-creds"}
    body["spec"]["source"]["secretRef"] = {"name": "src-creds"}
    ingestions.create(body)
    wait_for("the end", lambda: ingestions.status("sec").get("phase") in ("Completed", "Failed"),
             timeout=180)
    time.sleep(1)
    places = {
        "status": json.dumps(ingestions.get("sec")),
        "events": " ".join(ingestions.events("sec")),
        "operator log": operator.log_text(),
        "job": json.dumps(ingestions.batch.read_namespaced_job("sec-1", namespace).to_dict(),
                          default=str),
    }
    places["worker pod logs"] = pod_logs(kube_api, namespace, "job-name=sec-1")
    assert "--- sec-1-" in places["worker pod logs"], "no worker pod log found"
    for where, text in places.items():
        assert token not in text, f"the secret value leaked into {where}"
        assert aws not in text, f"the access key id leaked into {where}"
