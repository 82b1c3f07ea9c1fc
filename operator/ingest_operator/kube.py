"""Thin, synchronous Kubernetes API helpers used by the handlers (run in kopf's executor)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ingest_operator import GROUP, PLURAL, VERSION

_lock = threading.Lock()
_api: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """One shared client: in-cluster credentials, else the kubeconfig (local runs, tests)."""
    global _api
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api = client.ApiClient()
        return _api


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def get_ingestion(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return body


def update_status(
    namespace: str,
    name: str,
    compute: Callable[[dict[str, Any]], dict[str, Any] | None],
    attempts: int = 20,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Read-compute-write of the status with a resourceVersion precondition.

    ``compute(body)`` returns a status merge patch or None. The operator's handlers and the
    workers write the same status concurrently: the precondition makes every decision see the
    status it changes (a 409 re-reads and re-decides). Returns (fresh body, applied patch).
    """
    for _ in range(attempts):
        body = get_ingestion(namespace, name)
        if body is None:
            return None, None
        patch = compute(body)
        if not patch:
            return body, None
        try:
            new: dict[str, Any] = custom().patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {
                    "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                    "status": patch,
                },
            )
        except ApiException as exc:
            if exc.status == 409:
                continue
            if exc.status == 404:
                return None, None
            raise
        return new, patch
    raise RuntimeError(f"status of {namespace}/{name} kept changing; giving up for now")


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
        else:
            raise ValueError(f"unsupported kind {kind}")
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
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


def job_exists(namespace: str, name: str) -> bool:
    try:
        client.BatchV1Api(api_client()).read_namespaced_job(name, namespace)
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
