"""No privilege escalation through a CsvIngestion (issue 15), against the real API server with
the people impersonated (``kubectl --as --as-group``): the admission policy installed from
manifests/ refuses a spec that would have the operator do what its author may not (read a
Secret or a PVC, choose the image or ServiceAccount of a pod), the operator's own guard refuses
images and ServiceAccounts where the policy is missing, neither gets in the operator's way, and
the aggregated roles give `edit` and `view` the right access to CsvIngestions.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client, config, watch

from tests.conftest import TestEnv, run_kubectl
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import (
    BIG_ROWS,
    GROUP,
    PLURAL,
    VERSION,
    Ingestions,
    distinct_ids,
    ingestion,
)

POLICY = "csvingestion-no-escalation"  # the policy and its binding, in manifests/
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request"
TEAM = "ingest-team"  # a group that may write CsvIngestions in the namespace, and nothing else
AUTHOR = "alice"  # in TEAM, with no other right unless a test grants one
POD_CREATOR = "paula"  # in TEAM, and may create pods and get the PVC `data`
OTHER_IMAGE = "attacker.example/shell:1"
PRIVILEGED_SA = "deployer"  # a ServiceAccount of the namespace bound to `admin`


class People:
    """Impersonated people of one namespace, and the RBAC an admin gives them there."""

    def __init__(self, testenv: TestEnv, api: client.ApiClient, namespace: str) -> None:
        self.testenv, self.api, self.ns = testenv, api, namespace
        self.rbac = client.RbacAuthorizationV1Api(api)

    def bind(self, name: str, cluster_role: str, kind: str = "User") -> None:
        """A RoleBinding of a user (or group) to a ClusterRole, in the namespace."""
        self.rbac.create_namespaced_role_binding(self.ns, {
            "metadata": {"name": f"{name}-{cluster_role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": cluster_role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}],
        })

    def allow(self, user: str, what: str, rules: list[dict[str, Any]]) -> None:
        """A Role with these rules, bound to the user."""
        name = f"{user}-{what}"
        self.rbac.create_namespaced_role(self.ns, {"metadata": {"name": name}, "rules": rules})
        self.rbac.create_namespaced_role_binding(self.ns, {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })

    def kubectl(self, user: str, *args: str, input: str | None = None,
                groups: tuple[str, ...] = (TEAM,)) -> subprocess.CompletedProcess[str]:
        who = ["--as", user, *(f"--as-group={g}" for g in groups)]
        return run_kubectl(self.testenv, "-n", self.ns, *who, *args, input=input, check=False)

    def create(self, user: str, body: dict[str, Any],
               dry_run: bool = False) -> subprocess.CompletedProcess[str]:
        extra = ["--dry-run=server"] if dry_run else []
        return self.kubectl(user, "create", *extra, "-f", "-", input=json.dumps(body))

    def patch_spec(self, user: str, name: str, spec: dict[str, Any]) -> None:
        proc = self.kubectl(user, "patch", f"{PLURAL}.{GROUP}", name, "--type=merge",
                            "-p", json.dumps({"spec": spec}))
        assert proc.returncode == 0, proc.stderr

    def may(self, user: str, verb: str, resource: str, subresource: str = "") -> bool:
        """``kubectl auth can-i`` as the user alone; ``resource`` may be ``type/name``."""
        extra = ["--subresource", subresource] if subresource else []
        proc = self.kubectl(user, "auth", "can-i", verb, resource, *extra, groups=())
        return proc.stdout.strip() == "yes"

    def client_as(self, user: str) -> client.ApiClient:
        """A python client that acts as ``user`` (the API server adds system:authenticated)."""
        api = config.new_client_from_config(config_file=str(self.testenv.kubeconfig))
        api.set_default_header("Impersonate-User", user)
        return api


@pytest.fixture
def people(testenv: TestEnv, kube_api: client.ApiClient, namespace: str) -> People:
    team = People(testenv, kube_api, namespace)
    # The editor role is what a namespace's user needs for CsvIngestions, and all TEAM has.
    team.bind(TEAM, "csvingestion-editor", kind="Group")
    return team


def image_and_account_specs(
    ingestions: Ingestions, people: People, namespace: str, testenv: TestEnv
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two ingestions that ask for what only pod creators may have: another image ("img"), and
    the namespace's privileged ServiceAccount ("sa", made and bound to `admin` here)."""
    ingestions.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=PRIVILEGED_SA)))
    people.bind(f"system:serviceaccount:{namespace}:{PRIVILEGED_SA}", "admin")
    account = ingestion("sa", "file:///nowhere/none.csv", "t", testenv.kafka_bootstrap)
    account["spec"]["worker"]["serviceAccountName"] = PRIVILEGED_SA
    return spec_with_image("img", testenv), account


def spec_with_image(name: str, testenv: TestEnv, image: str = OTHER_IMAGE) -> dict[str, Any]:
    body = ingestion(name, "file:///nowhere/none.csv", "t", testenv.kafka_bootstrap)
    body["spec"]["worker"]["image"] = image
    return body


def policy_in_force(people: People, testenv: TestEnv) -> bool:
    """Whether the API server applies the policy now (its bindings reach it by a watch)."""
    proc = people.create(AUTHOR, spec_with_image("probe", testenv), dry_run=True)
    return proc.returncode != 0 and DENIED in proc.stderr


@pytest.fixture
def policy(people: People, testenv: TestEnv, kubectl: Callable[..., Any]) -> None:
    """The admission policy, installed from manifests/ by the environment, in force."""
    for kind in ("validatingadmissionpolicy", "validatingadmissionpolicybinding"):
        proc = kubectl("get", kind, POLICY, check=False)
        assert proc.returncode == 0, f"{kind} {POLICY} is not installed: {proc.stderr}"
    wait_for("the admission policy in force", lambda: policy_in_force(people, testenv),
             timeout=30, interval=0.5)


@contextmanager
def policy_removed(people: People, testenv: TestEnv,
                   kubectl: Callable[..., Any]) -> Iterator[None]:
    """The cluster without the policy's binding, put back as it was whatever happens.

    Tests run one at a time, so no other test meets the cluster without it meanwhile."""
    saved = json.loads(kubectl("get", "validatingadmissionpolicybinding", POLICY,
                               "-o", "json").stdout)
    meta = saved["metadata"]
    saved["metadata"] = {k: meta[k] for k in ("name", "labels", "annotations") if k in meta}
    saved.pop("status", None)
    kubectl("delete", "validatingadmissionpolicybinding", POLICY)
    try:
        wait_for("the policy out of force", lambda: not policy_in_force(people, testenv),
                 timeout=30, interval=0.5)
        yield
    finally:
        # As the environment installs it (server-side apply): idempotent, whoever put it back.
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(saved))
        wait_for("the policy back in force", lambda: policy_in_force(people, testenv),
                 timeout=30, interval=0.5)


def refused(proc: subprocess.CompletedProcess[str], *parts: str) -> str:
    """The policy's refusal, checked to name every part."""
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert DENIED in proc.stderr and "Forbidden" in proc.stderr, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr
    return proc.stderr


def accepted(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr


def children(ingestions: Ingestions) -> dict[str, set[str]]:
    """Names of the objects the operator could create for an ingestion, in the namespace."""
    rbac = client.RbacAuthorizationV1Api(ingestions.core.api_client)
    ns = ingestions.ns
    return {
        "jobs": set(ingestions.jobs()),
        "pods": {p.metadata.name for p in ingestions.core.list_namespaced_pod(ns).items},
        "serviceaccounts": {
            s.metadata.name for s in ingestions.core.list_namespaced_service_account(ns).items
        },
        "roles": {r.metadata.name for r in rbac.list_namespaced_role(ns).items},
        "rolebindings": {r.metadata.name for r in rbac.list_namespaced_role_binding(ns).items},
    }


# --- the admission policy ----------------------------------------------------------------------


def test_a_secret_the_person_may_not_get_is_refused_naming_it(
    policy: None, people: People, testenv: TestEnv, namespace: str, kube_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube_api)
    for secret in ("src-creds", "kafka-creds", "registry-creds"):
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret), string_data={"k": "v"}))
    source = ingestion("src", "s3://bucket/a.csv", "t", testenv.kafka_bootstrap, suspend=True)
    source["spec"]["source"]["secretRef"] = {"name": "src-creds"}
    kafka = ingestion("kafka", "s3://bucket/a.csv", "t", testenv.kafka_bootstrap, suspend=True)
    kafka["spec"]["kafka"]["secretRef"] = {"name": "kafka-creds"}

    message = refused(people.create(AUTHOR, source), "spec.source.secretRef: ",
                      f"{AUTHOR} may not get secret src-creds in namespace {namespace}",
                      "(needs get on secrets)")
    print(message)
    refused(people.create(AUTHOR, kafka), "spec.kafka.secretRef: ",
            f"{AUTHOR} may not get secret kafka-creds in namespace {namespace}",
            "(needs get on secrets)")
    registry = ingestion("registry", "s3://bucket/a.csv", "t", testenv.kafka_bootstrap,
                         suspend=True)
    registry["spec"]["kafka"] |= {"valueFormat": "avro", "schemaRegistry": {
        "url": "http://registry:8081", "secretRef": {"name": "registry-creds"}}}
    refused(people.create(AUTHOR, registry), "spec.kafka.schemaRegistry.secretRef: ",
            f"{AUTHOR} may not get secret registry-creds in namespace {namespace}")
    # The same person's ingestion without a Secret is accepted.
    accepted(people.create(AUTHOR, ingestion("plain", "s3://bucket/a.csv", "t",
                                             testenv.kafka_bootstrap, suspend=True)))
    # Allowed one Secret by name: that one passes, the other is still refused.
    people.allow(AUTHOR, "src-creds", [{"apiGroups": [""], "resources": ["secrets"],
                                        "resourceNames": ["src-creds"], "verbs": ["get"]}])
    wait_for("the grant", lambda: people.may(AUTHOR, "get", "secrets/src-creds"))
    accepted(people.create(AUTHOR, source))
    refused(people.create(AUTHOR, kafka), "kafka-creds")
    # An edit is checked as well: naming the other Secret in an accepted spec.
    proc = people.kubectl(AUTHOR, "patch", f"{PLURAL}.{GROUP}", "src", "--type=merge", "-p",
                          json.dumps({"spec": {"kafka": {"secretRef": {"name": "kafka-creds"}}}}))
    refused(proc, "spec.kafka.secretRef: ", "kafka-creds")


def test_a_pvc_the_person_may_not_get_is_refused(
    policy: None, operator: OperatorDeployment, people: People, ingestions: Ingestions,
    testenv: TestEnv, namespace: str, data: DataVolume, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
) -> None:
    csv = write_csv(data.path / "a.csv", 2000)
    topic = new_topic(partitions=1)
    body = ingestion("vol", data.source(csv), topic, testenv.kafka_bootstrap)
    refused(people.create(AUTHOR, body), "spec.source.volume.claimName: ",
            f"{AUTHOR} may not get persistentvolumeclaim data in namespace {namespace}",
            "(needs get on persistentvolumeclaims)")
    people.allow(AUTHOR, "data", [{"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                                   "resourceNames": ["data"], "verbs": ["get"]}])
    wait_for("the grant", lambda: people.may(AUTHOR, "get", "persistentvolumeclaims/data"))
    accepted(people.create(AUTHOR, body))
    st = ingestions.wait_phase("vol", "Completed", timeout=180)
    assert st["rowsPublished"] == 2000
    assert distinct_ids(consume_all(topic, 2000)) == set(range(2000))


def test_image_and_service_account_need_the_right_to_create_pods(
    policy: None, operator: OperatorDeployment, people: People, ingestions: Ingestions,
    testenv: TestEnv, namespace: str, data: DataVolume, new_topic: Callable[..., str],
) -> None:
    image, account = image_and_account_specs(ingestions, people, namespace, testenv)

    refused(people.create(AUTHOR, image), "spec.worker.image: ",
            f"{AUTHOR} may not create pods in namespace {namespace}", "(needs create on pods)")
    refused(people.create(AUTHOR, account), "spec.worker.serviceAccountName: ",
            f"{AUTHOR} may not create pods in namespace {namespace}", "(needs create on pods)",
            f"as ServiceAccount {PRIVILEGED_SA}")

    # A person who may create pods could run that image as that account anyway: allowed both.
    people.allow(POD_CREATOR, "pods", [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "resourceNames": ["data"],
         "verbs": ["get"]},
    ])
    wait_for("the grant", lambda: people.may(POD_CREATOR, "create", "pods"))
    accepted(people.create(POD_CREATOR, image))
    accepted(people.create(POD_CREATOR, account))
    # The two layers: what the policy lets through, the operator's guard still bounds...
    img = ingestions.wait_phase("img", "Failed", timeout=60)
    assert f"spec.worker.image {OTHER_IMAGE} is not an allowed worker image" in img["message"]
    assert "CSVKAFKA_ALLOWED_WORKER_IMAGES" in img["message"]
    sa = ingestions.wait_phase("sa", "Failed", timeout=60)
    assert f"spec.worker.serviceAccountName {PRIVILEGED_SA}" in sa["message"]
    assert "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE=true" in sa["message"]
    # ...and an image in its allowlist (the operator's own, named explicitly) runs.
    csv = write_csv(data.path / "b.csv", 500)
    own = ingestion("own", data.source(csv), new_topic(partitions=1), testenv.kafka_bootstrap)
    own["spec"]["worker"]["image"] = testenv.image
    accepted(people.create(POD_CREATOR, own))
    assert ingestions.wait_phase("own", "Completed", timeout=180)["rowsPublished"] == 500
    pod = ingestions.worker_pods("own-1")[0]
    assert pod.spec.containers[0].image == testenv.image


# --- the operator's guard, without the policy ---------------------------------------------------


def test_without_the_policy_the_operator_guard_stops_image_and_service_account(
    operator: OperatorDeployment, people: People, ingestions: Ingestions, testenv: TestEnv,
    namespace: str, kubectl: Callable[..., Any],
) -> None:
    image, account = image_and_account_specs(ingestions, people, namespace, testenv)
    before = children(ingestions)
    assert before["jobs"] == before["pods"] == set()

    with policy_removed(people, testenv, kubectl):
        accepted(people.create(AUTHOR, image))  # nothing stops it at the door now
        accepted(people.create(AUTHOR, account))
        img = ingestions.wait_phase("img", "Failed", timeout=60)
        sa = ingestions.wait_phase("sa", "Failed", timeout=60)
    print(img["message"], sa["message"], sep="\n")
    assert img["message"].startswith(
        f"Refused, no worker started: spec.worker.image {OTHER_IMAGE} is not an allowed worker "
        f"image (allowed: {testenv.image}); an administrator allows it by adding it to "
        "CSVKAFKA_ALLOWED_WORKER_IMAGES on the operator")
    assert sa["message"].startswith(
        f"Refused, no worker started: spec.worker.serviceAccountName {PRIVILEGED_SA}: ")
    assert "CSVKAFKA_ALLOW_SERVICE_ACCOUNT_OVERRIDE=true" in sa["message"]
    for st in (img, sa):
        failed = next(c for c in st["conditions"] if c["type"] == "Failed")
        assert (failed["status"], failed["reason"]) == ("True", "WorkerNotAllowed")
        assert st.get("run", 0) == 0 and "jobName" not in st
    for name in ("img", "sa"):
        assert any(e.startswith("Refused: ") for e in ingestions.events(name))
    time.sleep(2)  # anything the operator would create after the status write has come by now
    assert children(ingestions) == before, "the operator created something for them"


# --- the operator at work under the policy ------------------------------------------------------


def test_the_operator_at_work_under_the_policy(
    policy: None, operator: OperatorDeployment, people: People, ingestions: Ingestions,
    testenv: TestEnv, data: DataVolume, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
) -> None:
    """Its status writes, annotations and Job handling pass; its author's edits are checked."""
    people.allow(AUTHOR, "data", [{"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                                   "resourceNames": ["data"], "verbs": ["get"]}])
    wait_for("the grant", lambda: people.may(AUTHOR, "get", "persistentvolumeclaims/data"))
    small = write_csv(data.path / "small.csv", 5000)
    big = write_csv(data.path / "big.csv", BIG_ROWS)
    topics = {name: new_topic(partitions=1) for name in ("full", "fix", "pause")}
    fast = {"everyRows": 10_000, "everySeconds": 1}
    accepted(people.create(AUTHOR, ingestion("full", data.source(small), topics["full"],
                                             testenv.kafka_bootstrap)))
    accepted(people.create(AUTHOR, ingestion("fix", data.source(data.path / "none.csv"),
                                             topics["fix"], testenv.kafka_bootstrap)))
    accepted(people.create(AUTHOR, ingestion("pause", data.source(big), topics["pause"],
                                             testenv.kafka_bootstrap, checkpoint=fast)))

    # A spec-edit retry.
    ingestions.wait_phase("fix", "Failed", timeout=120)
    people.patch_spec(AUTHOR, "fix", {"source": data.source(small)})
    # A suspend once the first checkpoint is saved, then a resume.
    wait_for("a first checkpoint",
             lambda: (ingestions.status("pause").get("checkpoint") or {}).get("row"),
             timeout=120, interval=0.05)
    people.patch_spec(AUTHOR, "pause", {"suspend": True})
    wait_for("the Job to go", lambda: "pause-1" not in ingestions.jobs(), timeout=60)
    st = ingestions.status("pause")
    assert st["phase"] == "Pending" and "Suspended" in st["message"], st
    people.patch_spec(AUTHOR, "pause", {"suspend": False})

    for name, rows, run in (("full", 5000, 1), ("fix", 5000, 2), ("pause", BIG_ROWS, 2)):
        st = ingestions.wait_phase(name, "Completed", timeout=300)
        assert (st["rowsPublished"], st["run"]) == (rows, run), st
        assert distinct_ids(consume_all(topics[name], rows, timeout=120)) == set(range(rows))
        # kopf's own writes (annotations, never the spec) went through as well.
        annotations = ingestions.get(name)["metadata"].get("annotations") or {}
        assert "csvkafka.io/last-handled-configuration" in annotations, annotations


# --- the aggregated roles ----------------------------------------------------------------------


def _first_event(api: client.ApiClient, namespace: str) -> dict[str, Any] | None:
    """The first event of a watch on CsvIngestions (an ADDED one for each existing object)."""
    w = watch.Watch()
    custom = client.CustomObjectsApi(api)
    for event in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                          PLURAL, timeout_seconds=10):
        w.stop()
        return dict(event)
    return None


def test_edit_may_create_and_watch_csvingestions_and_view_only_read_them(
    crd_installed: None, people: People, testenv: TestEnv, namespace: str,
) -> None:
    editor, viewer = "bob", "carol"
    people.bind(editor, "edit")
    people.bind(viewer, "view")
    # The controller-manager aggregates the roles shortly after they are installed.
    wait_for("csvingestion-editor in edit",
             lambda: people.may(editor, "create", f"{PLURAL}.{GROUP}"), timeout=30)
    wait_for("csvingestion-viewer in view",
             lambda: people.may(viewer, "watch", f"{PLURAL}.{GROUP}"), timeout=30)
    csvi = f"{PLURAL}.{GROUP}"
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert people.may(editor, verb, csvi), f"edit may not {verb} csvingestions"
    for verb in ("get", "list", "watch"):
        assert people.may(viewer, verb, csvi), f"view may not {verb} csvingestions"
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not people.may(viewer, verb, csvi), f"view may {verb} csvingestions"
    for who in (editor, viewer):  # a forged checkpoint would skip rows
        for verb in ("update", "patch"):
            assert not people.may(who, verb, csvi, "status"), f"{who} may {verb} status"

    body = ingestion("mine", "s3://bucket/a.csv", "t", testenv.kafka_bootstrap, suspend=True)
    accepted(people.kubectl(editor, "create", "-f", "-", input=json.dumps(body), groups=()))
    for who in (editor, viewer):
        event = _first_event(people.client_as(who), namespace)
        assert event is not None and event["type"] == "ADDED", event
        assert event["object"]["metadata"]["name"] == "mine"
        accepted(people.kubectl(who, "get", csvi, "mine", groups=()))

    # What view may not do, for real: the API server's own refusals (RBAC, not the policy).
    other = ingestion("theirs", "s3://bucket/a.csv", "t", testenv.kafka_bootstrap, suspend=True)
    attempts = {
        "create": ("create", "-f", "-"),
        "patch": ("patch", csvi, "mine", "--type=merge", "-p", '{"spec":{"retry":1}}'),
        "delete": ("delete", csvi, "mine"),
    }
    for verb, args in attempts.items():
        proc = people.kubectl(viewer, *args, input=json.dumps(other), groups=())
        assert proc.returncode != 0, f"view could {verb}"
        assert f'User "{viewer}" cannot {verb} resource "csvingestions"' in proc.stderr
    status_patch = ("patch", csvi, "mine", "--subresource=status", "--type=merge",
                    "-p", '{"status":{"checkpoint":{"row":999999}}}')
    for who in (editor, viewer):
        proc = people.kubectl(who, *status_patch, groups=())
        assert proc.returncode != 0 and "cannot patch resource" in proc.stderr, proc.stderr
    accepted(people.kubectl(editor, "delete", csvi, "mine", groups=()))
