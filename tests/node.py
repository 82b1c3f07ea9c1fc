"""The real node, as the tests reach it: the containers of pods (through crictl, as an operator
of a cluster would on the node), their logs (through the API server, as `kubectl logs`), and a
volume that carries the tests' files into worker pods.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client


def crictl(*args: str) -> str:
    """crictl against the node's containerd (CONTAINER_RUNTIME_ENDPOINT from the env file)."""
    proc = subprocess.run(["crictl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"crictl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def container_pid(namespace: str, pod: str, container: str | None = None) -> int | None:
    """The host pid of a running container of a pod, or None when none runs."""
    labels = ["--label", f"io.kubernetes.pod.namespace={namespace}",
              "--label", f"io.kubernetes.pod.name={pod}"]
    if container:
        labels += ["--label", f"io.kubernetes.container.name={container}"]
    ids = crictl("ps", "-q", "--state", "Running", *labels).split()
    if not ids:
        return None
    info = json.loads(crictl("inspect", ids[0]))
    pid = int(info.get("info", {}).get("pid") or 0)
    return pid or None


def kill_container(namespace: str, pod: str, container: str | None = None) -> int | None:
    """SIGKILLs the main process of a pod's running container from the host, as the kernel's
    OOM killer or a crashing node would; returns the pid killed, or None if none ran."""
    pid = container_pid(namespace, pod, container)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid


def pod_logs(api: client.ApiClient, namespace: str, selector: str) -> str:
    """Every container log of the pods a label selector matches, the previous instance's too."""
    core = client.CoreV1Api(api)
    parts: list[str] = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        for previous in (True, False):
            try:
                text = core.read_namespaced_pod_log(
                    pod.metadata.name, namespace, previous=previous, _preload_content=False
                ).data.decode(errors="replace")
            except client.ApiException:
                continue  # no previous instance, or the pod never started
            parts.append(f"--- {pod.metadata.name}{' (previous)' if previous else ''}\n{text}")
    return "\n".join(parts)


@dataclass(frozen=True)
class DataVolume:
    """A host directory served to one namespace's pods as the PersistentVolumeClaim ``data``
    (a hostPath PersistentVolume: the node shares the host's filesystem)."""

    path: Path
    claim: str = "data"
    mount_path: str = "/data"

    def url(self, file: Path) -> str:
        return f"file://{self.mount_path}/{file.relative_to(self.path)}"

    def source(self, file: Path, **extra: Any) -> dict[str, Any]:
        """``spec.source`` for a file written under :attr:`path`."""
        return {
            "url": self.url(file),
            "volume": {"claimName": self.claim, "mountPath": self.mount_path},
            **extra,
        }


def create_data_volume(api: client.ApiClient, namespace: str, root: Path) -> DataVolume:
    """A directory under ``root`` bound to a claim named ``data`` in ``namespace``."""
    path = root / namespace
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the worker runs as uid 10001
    core = client.CoreV1Api(api)
    pv_name = f"data-{namespace}"
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"csvkafka.io/test-data": "true"}},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadOnlyMany", "ReadWriteOnce"],
                "hostPath": {"path": str(path), "type": "Directory"},
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": namespace, "name": "data"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "10Gi"}},
                "storageClassName": "",
                "volumeName": pv_name,
            },
        },
    )
    return DataVolume(path)


def delete_data_volume(api: client.ApiClient, namespace: str) -> None:
    try:
        client.CoreV1Api(api).delete_persistent_volume(f"data-{namespace}")
    except client.ApiException as exc:
        if exc.status != 404:
            raise
