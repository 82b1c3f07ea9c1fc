"""Thin, synchronous Kubernetes API helpers used by the handlers (run in kopf's executor)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ingest_worker.api import GROUP, PLAN_KIND, PLAN_PLURAL, VERSION
from ingest_worker.api.client import api_client

# The CsvIngestion itself is read and its status written through ingest_worker.api.client
# (get_ingestion, update_status), the same code the workers use.


def create_ok_if_exists(kind: str, body: Mapping[str, Any]) -> bool:
    """Creates an object; returns False if it already existed (409): creation is idempotent."""
    api = api_client()
    ns = body["metadata"]["namespace"]
    try:
        if kind == "Job":
            client.BatchV1Api(api).create_namespaced_job(ns, body)
        elif kind == "ServiceAccount":
            client.CoreV1Api(api).create_namespaced_service_account(ns, body)
        elif kind == "Role":
            client.RbacAuthorizationV1Api(api).create_namespaced_role(ns, body)
        elif kind == "RoleBinding":
            client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(ns, body)
        elif kind == PLAN_KIND:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, PLAN_PLURAL, body
            )
        else:
            raise ValueError(f"unsupported kind {kind}")
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def clear_plan(namespace: str, name: str) -> bool:
    """Empties a CsvIngestionPlan (a run from the beginning plans again); False if it had no
    plan or does not exist."""
    objects = client.CustomObjectsApi(api_client())
    try:
        body = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLAN_PLURAL, name)
        if "plan" not in body:
            return False
        del body["plan"]
        objects.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLAN_PLURAL, name, body
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise  # a 409 too: kopf retries the handler
    return True


def delete_job(namespace: str, name: str) -> bool:
    """Deletes a Job and (in the background) its pods; False if it was already gone."""
    try:
        client.BatchV1Api(api_client()).delete_namespaced_job(
            name, namespace, propagation_policy="Background"
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Pods as the API writes them (camelCase dicts), for the pure functions of phases.py."""
    api = api_client()
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=label_selector)
    items: list[dict[str, Any]] = api.sanitize_for_serialization(pods).get("items") or []
    return items
