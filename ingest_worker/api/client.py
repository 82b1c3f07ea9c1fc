"""The Kubernetes side of the contract: one client loader, one status read-compare-write.

Both the operator's handlers and the worker's status store (:mod:`ingest_worker.checkpoint.kube`)
write the same status concurrently, each its own fields. :func:`update_status` makes every
decision see the status it changes: it reads the resource, asks ``compute`` for a patch, and
writes it with a ``resourceVersion`` precondition; a 409 (someone wrote in between) re-reads
and re-decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ingest_worker.api import GROUP, PLURAL, VERSION

_lock = threading.Lock()
_api: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """One shared client: in-cluster credentials (the pod's ServiceAccount), else $KUBECONFIG."""
    global _api
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api = client.ApiClient()
        return _api


def custom_objects(api: client.ApiClient | None = None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api or api_client())


def get_ingestion(
    namespace: str, name: str, api: client.ApiClient | None = None
) -> dict[str, Any] | None:
    """The CsvIngestion as the API server has it, or None if there is none."""
    try:
        body: dict[str, Any] = custom_objects(api).get_namespaced_custom_object(
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
    api: client.ApiClient | None = None,
    attempts: int = 30,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Read-compare-write of the status with a ``resourceVersion`` precondition.

    ``compute(body)`` returns a status merge patch (see :func:`~.status.status_patch`) or None
    for no write; it may raise to stop. Returns (fresh body, applied patch); (None, None) when
    the resource is gone.
    """
    objects = custom_objects(api)
    for attempt in range(attempts):
        body = get_ingestion(namespace, name, api)
        if body is None:
            return None, None
        patch = compute(body)
        if not patch:
            return body, None
        try:
            new: dict[str, Any] = objects.patch_namespaced_custom_object_status(
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
            if exc.status == 409:  # someone wrote in between: re-read and re-decide
                time.sleep(min(0.05 * attempt, 0.5))
                continue
            if exc.status == 404:
                return None, None
            raise
        return new, patch
    raise RuntimeError(f"status of {namespace}/{name} kept changing; giving up for now")
