"""Pure functions that make every object the operator creates: no I/O, easy to test.

Each ingestion run gets one Job named ``<ingestion>-<run>``; the worker's ServiceAccount, Role
and RoleBinding are shared by all runs. The handlers add ownerReferences (``kopf.adopt``) so the
garbage collector removes everything with the CsvIngestion.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ingest_operator import GROUP, PLURAL, PREFIX
from ingest_worker.api import API_VERSION, PLAN_KIND, PLAN_PLURAL
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.exitcodes import WORKER_EXIT_FATAL
from ingest_worker.plan.assign import INDEXES_PER_POD
from ingest_worker.plan.globs import names_many

LABEL_INGESTION = f"{PREFIX}/ingestion"
LABEL_RUN = f"{PREFIX}/run"
WORKER_CONTAINER = "worker"
WORKER_UID = 10001
KAFKA_SECRET_DIR = "/var/run/csvkafka/kafka"
SOURCE_SECRET_DIR = "/var/run/csvkafka/source-secret"
REGISTRY_SECRET_DIR = "/var/run/csvkafka/schema-registry"
WORKER_METRICS_PORT = 9100  # the RFC's ingest_csv_* metrics, scraped from the worker pod
# Ephemeral storage: the worker writes only its /tmp emptyDir (a checkpoint file at most) and its
# container log, whose bad rows are a sample plus counts (ingest_worker/badrows.py), and which
# the kubelet rotates at 10 MiB, 5 files kept. 64Mi requested; a limit of 1Gi leaves room for a
# log that grows past its rotation between two of the kubelet's checks (every 10 s), and evicts
# a pod that fills the node's disk before it hurts the other pods.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
    "limits": {"memory": "1Gi", "ephemeral-storage": "1Gi"},
}
TMP_SIZE_LIMIT = "256Mi"
"""The /tmp emptyDir's bound, whatever spec.worker.resources says: nothing the worker writes
there comes near it (the errors log and file checkpoints are the command line's)."""

# Job names become the `job-name` label of their pods: at most 63 characters.
_MAX_JOB_NAME = 63


def _bounded(base: str, suffix: str, limit: int) -> str:
    """``base + suffix``, with base shortened and made unique by a hash if it is too long."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def job_name(ingestion: str, run: int) -> str:
    """The deterministic name of a run's Job: a retried create finds the same Job (409)."""
    return _bounded(ingestion, f"-{run}", _MAX_JOB_NAME)


def worker_account_name(ingestion: str) -> str:
    """Name of the ServiceAccount, Role and RoleBinding of an ingestion's workers."""
    return _bounded(ingestion, "-worker", _MAX_JOB_NAME)


def labels(ingestion: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "csv-ingest-worker",
        "app.kubernetes.io/managed-by": "csvkafka-operator",
        # A label value is at most 63 characters; the selector uses the full name elsewhere.
        LABEL_INGESTION: ingestion[:63].rstrip("-._"),
    }


def build_service_account(ingestion: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": worker_account_name(ingestion),
            "namespace": namespace,
            "labels": labels(ingestion),
        },
        "automountServiceAccountToken": False,  # the Job's pod opts in; nothing else needs it
    }


def build_role(ingestion: str, namespace: str) -> dict[str, Any]:
    """Lets the worker read its own CsvIngestion and write only that resource's status."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": worker_account_name(ingestion),
            "namespace": namespace,
            "labels": labels(ingestion),
        },
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [PLURAL],
                "resourceNames": [ingestion],
                "verbs": ["get"],
            },
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [ingestion],
                "verbs": ["get", "patch", "update"],
            },
            # The run's plan (a run with work units): index 0 records it, every pod reads it.
            {
                "apiGroups": [GROUP],
                "resources": [PLAN_PLURAL],
                "resourceNames": [ingestion],
                "verbs": ["get", "update"],
            },
        ],
    }


def build_plan(ingestion: str, namespace: str) -> dict[str, Any]:
    """The run's CsvIngestionPlan, empty: index 0 of the worker Job records the plan in it."""
    return {
        "apiVersion": API_VERSION,
        "kind": PLAN_KIND,
        "metadata": {"name": ingestion, "namespace": namespace, "labels": labels(ingestion)},
    }


def job_indexes(spec: CsvIngestionSpec) -> int:
    """The Indexed Job's completions for a run with work units.

    Many files: four indexes per pod, so a pod that finishes early takes another batch (see
    :mod:`ingest_worker.plan.assign`). One file cut into shards: one index per pod, as the
    shards are equal ranges of known size.
    """
    pods = spec.worker.pods
    return pods * INDEXES_PER_POD if names_many(spec.source.url) else pods


def build_role_binding(ingestion: str, namespace: str, account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": worker_account_name(ingestion),
            "namespace": namespace,
            "labels": labels(ingestion),
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": worker_account_name(ingestion),
        },
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def worker_account(ingestion: str, spec: CsvIngestionSpec) -> str:
    """The ServiceAccount the worker runs as: the spec's (workload identity) or ours."""
    return spec.worker.service_account_name or worker_account_name(ingestion)


def source_access(
    spec: CsvIngestionSpec,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(envFrom, volumes, volumeMounts) that give the worker access to the source.

    The source Secret's keys become environment variables under the names each cloud SDK
    reads (AWS_*, GOOGLE_APPLICATION_CREDENTIALS_JSON, AZURE_STORAGE_*), and the Secret is also
    mounted, so ``GOOGLE_APPLICATION_CREDENTIALS`` may name a key file in it. Without a Secret
    nothing is added: the SDK's default chain (workload identity of the worker's
    ServiceAccount) applies. The values never pass through the operator: the kubelet reads the
    Secret. A ``volume`` is the PersistentVolumeClaim holding the file, mounted read-only.
    """
    env_from: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    src = spec.source
    if src.secret_ref is not None:
        env_from.append({"secretRef": {"name": src.secret_ref.name}})
        volumes.append({"name": "source-secret", "secret": {"secretName": src.secret_ref.name}})
        mounts.append({"name": "source-secret", "mountPath": SOURCE_SECRET_DIR, "readOnly": True})
    if src.volume is not None:
        volumes.append(
            {
                "name": "source",
                "persistentVolumeClaim": {"claimName": src.volume.claim_name, "readOnly": True},
            }
        )
        mounts.append({"name": "source", "mountPath": src.volume.mount_path, "readOnly": True})
    return env_from, volumes, mounts


def build_job(
    ingestion: str,
    namespace: str,
    spec: CsvIngestionSpec,
    *,
    run: int,
    generation: int,
    default_image: str,
    image_pull_policy: str = "IfNotPresent",
) -> dict[str, Any]:
    """The worker Job of one run.

    The spec is passed as a snapshot (``CSVKAFKA_SPEC``): pod retries of this run use the
    generation the run was started from, and spec edits apply to the next run.
    The pod passes Pod Security ``restricted``: non-root, no privilege escalation, all
    capabilities dropped, RuntimeDefault seccomp, read-only root filesystem (with /tmp on an
    emptyDir).
    """
    name = job_name(ingestion, run)
    job_labels = {**labels(ingestion), LABEL_RUN: str(run)}
    env: list[dict[str, Any]] = [
        {"name": "CSVKAFKA_INGESTION_NAME", "value": ingestion},
        {"name": "CSVKAFKA_INGESTION_NAMESPACE", "value": namespace},
        {"name": "CSVKAFKA_RUN", "value": str(run)},
        {"name": "CSVKAFKA_GENERATION", "value": str(generation)},
        {"name": "CSVKAFKA_JOB_NAME", "value": name},
        {"name": "CSVKAFKA_SPEC", "value": json.dumps(spec.to_wire(), sort_keys=True)},
        {"name": "CSVKAFKA_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CSVKAFKA_WORKER_METRICS_PORT", "value": str(WORKER_METRICS_PORT)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    env_from, source_volumes, source_mounts = source_access(spec)
    volumes += source_volumes
    mounts += source_mounts
    if spec.kafka.secret_ref is not None:
        # librdkafka property names (sasl.username) are not valid variable names: mount them.
        volumes.append(
            {"name": "kafka-secret", "secret": {"secretName": spec.kafka.secret_ref.name}}
        )
        mounts.append({"name": "kafka-secret", "mountPath": KAFKA_SECRET_DIR, "readOnly": True})
        env.append({"name": "CSVKAFKA_KAFKA_SECRET_DIR", "value": KAFKA_SECRET_DIR})
    registry = spec.kafka.schema_registry
    if registry is not None and registry.secret_ref is not None:
        volumes.append(
            {"name": "registry-secret", "secret": {"secretName": registry.secret_ref.name}}
        )
        mounts.append(
            {"name": "registry-secret", "mountPath": REGISTRY_SECRET_DIR, "readOnly": True}
        )
        env.append({"name": "CSVKAFKA_REGISTRY_SECRET_DIR", "value": REGISTRY_SECRET_DIR})

    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec.worker.image or default_image,
        "imagePullPolicy": image_pull_policy,
        "command": ["python", "-m", "ingest_worker.job_main"],
        "env": env,
        "resources": spec.worker.resources or DEFAULT_RESOURCES,
        "volumeMounts": mounts,
        "ports": [{"name": "metrics", "containerPort": WORKER_METRICS_PORT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env_from:
        container["envFrom"] = env_from
    job_spec: dict[str, Any] = {"backoffLimit": spec.worker.backoff_limit}
    if spec.has_units:
        # Each index owns a batch of units; its pod retries on its own (backoffLimitPerIndex),
        # and a failed index does not stop the others. A unit's own error never fails the pod:
        # the worker records it and goes on with the index's other units.
        indexes = job_indexes(spec)
        job_spec = {
            "completionMode": "Indexed",
            "completions": indexes,
            "parallelism": spec.worker.pods,
            "backoffLimitPerIndex": spec.worker.backoff_limit,
        }
        env.append({"name": "CSVKAFKA_INDEXES", "value": str(indexes)})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels},
        "spec": {
            **job_spec,
            # A fatal worker error (missing source, bad credentials) fails the run at once;
            # disruptions (eviction, preemption) do not count against the backoff limit.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": WORKER_CONTAINER,
                            "operator": "In",
                            "values": [WORKER_EXIT_FATAL],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {
                    "labels": job_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(WORKER_METRICS_PORT),
                    },
                },
                "spec": {
                    "restartPolicy": "Never",  # each retry is a new pod: the attempt count
                    "serviceAccountName": worker_account(ingestion, spec),
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": WORKER_UID,
                        "runAsGroup": WORKER_UID,
                        "fsGroup": WORKER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
