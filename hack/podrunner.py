#!/usr/bin/env python3
"""A kubelet stand-in for the local test environment.

There is no container runtime on this machine, so this runner plays the two node-side roles the
control plane needs for Jobs to work:

* scheduler: it binds every unscheduled Pod (default scheduler) to its Node;
* kubelet: it runs the first container of each Pod bound to its Node as a local process (command,
  args, env, envFrom, Secret/ConfigMap/emptyDir volumes resolved as a kubelet would), with the
  Pod's ServiceAccount identity handed over as a kubeconfig, and writes the Pod's status back
  through the pods/status subresource, so the real Job controller sees real completions,
  failures and deletions.

Usage:
    python hack/podrunner.py --kubeconfig PATH --node-name local-runner --state-dir DIR \
        [--python PATH] [--workdir DIR]

Layout under --state-dir:
    pods/<ns>_<name>.log                  stdout+stderr of the pod's process (appended)
    pods/<ns>_<name>_<uid>/               per-pod state: kubeconfig, token, pid, volumes/<vol>/
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

log = logging.getLogger("podrunner")

Obj = dict[str, Any]
# Looks up a Secret or ConfigMap by name in the pod's namespace: its decoded data, or None if the
# object does not exist. Injected so that env/volume resolution stays pure and unit-testable.
DataLookup = Callable[[str], Mapping[str, bytes] | None]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
MAX_GRACE_SECONDS = 10.0
LEASE_DURATION_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
NODE_STATUS_SECONDS = 40.0
CONFIG_RETRY_SECONDS = 3.0
TOKEN_EXPIRATION_SECONDS = 3600
TERMINATION_MESSAGE_MAX_BYTES = 4096
TERMINATION_MESSAGE_MAX_LINES = 80
LOCAL_IP = "127.0.0.1"
PYTHON_ARGV0 = re.compile(r"^python(3(\.\d+)?)?$")
# The client picks json-patch for every PATCH unless told otherwise; our bodies are objects.
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class ConfigError(Exception):
    """The pod cannot start yet (missing Secret/ConfigMap/key...); kubelet retries these."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Pure helpers (unit-tested in tests/env/test_podrunner_unit.py)
# --------------------------------------------------------------------------------------------


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    # Lease renewTime is a MicroTime: the API server insists on the 6 fractional digits.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion (third_party/forked/golang/expansion).

    `$(NAME)` becomes env[NAME] when defined and stays verbatim otherwise; `$$` escapes a `$`;
    any other `$` is kept as is.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(env.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def build_argv(container: Mapping[str, Any], env: Mapping[str, str], python: str) -> list[str]:
    """command + args with `$(VAR)` expanded; a python argv[0] becomes our interpreter.

    The image is not available, so an empty command+args (image entrypoint) cannot be run.
    """
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    argv = [expand_vars(a, env) for a in command + args]
    if not argv:
        raise ConfigError(
            "container has neither command nor args; the image entrypoint is unknown here",
            reason="StartError",
        )
    # `python`, `python3`, `/usr/local/bin/python3.12`...: the image's interpreter is ours.
    if PYTHON_ARGV0.match(os.path.basename(argv[0])):
        argv[0] = python
    return argv


def field_ref_value(pod: Mapping[str, Any], field_path: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": LOCAL_IP,
        "status.podIPs": LOCAL_IP,
        "status.hostIP": LOCAL_IP,
        "status.hostIPs": LOCAL_IP,
    }
    if field_path in simple:
        return simple[field_path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field_path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        # Downward API volume format: key="value" lines, sorted.
        items = sorted((meta.get(field_path.split(".")[1]) or {}).items())
        return "\n".join(f"{k}={json.dumps(str(v))}" for k, v in items)
    raise ConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


def resource_field_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """resourceFieldRef: the limit (or request) divided by the divisor, rounded up.

    Without a limit kubelet uses node allocatable; we use a fixed, harmless default.
    """
    from kubernetes.utils import parse_quantity

    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "limits":
        raw = {"cpu": str(os.cpu_count() or 1), "memory": "8Gi"}.get(name, "0")
    if raw is None:
        raw = "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1")) or 1
    return str(math.ceil(parse_quantity(str(raw)) / divisor))


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    # stringData is write-only, but accept it so hand-made test dicts work too.
    data.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


def decode_configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return data


def _valid_env_name(name: str) -> bool:
    # RelaxedEnvironmentVariableValidation: any printable ASCII except '='.
    return bool(name) and "=" not in name and all(32 <= ord(c) < 127 for c in name)


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: DataLookup,
    configmaps: DataLookup,
    base: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Kubelet's makeEnvironmentVariables, minus service links.

    Returns (process_env, container_env): the full env for the process (base + container) and
    the container-declared part only, which is what `$(VAR)` references may see in Kubernetes.
    Raises ConfigError for a missing non-optional Secret/ConfigMap/key.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "")
    declared: dict[str, str] = {}

    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        if "secretRef" in src:
            ref, kind, lookup = src["secretRef"], "secret", secrets
        elif "configMapRef" in src:
            ref, kind, lookup = src["configMapRef"], "configmap", configmaps
        else:
            continue
        data = lookup(ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            if _valid_env_name(prefix + key):
                declared[prefix + key] = value.decode(errors="replace")

    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        value_from = var.get("valueFrom")
        if var.get("value") not in (None, "") or not value_from:
            # Plain values may reference variables declared before them.
            declared[name] = expand_vars(str(var.get("value") or ""), declared)
            continue
        if "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            is_secret = "secretKeyRef" in value_from
            ref = value_from["secretKeyRef" if is_secret else "configMapKeyRef"]
            obj_name, key = ref.get("name", ""), ref.get("key", "")
            data = (secrets if is_secret else configmaps)(obj_name)
            label = "Secret" if is_secret else "ConfigMap"
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{label.lower()} "{obj_name}" not found')
            if key not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"couldn't find key {key} in {label} {ns}/{obj_name}")
            declared[name] = data[key].decode(errors="replace")
        elif "fieldRef" in value_from:
            declared[name] = field_ref_value(pod, str(value_from["fieldRef"].get("fieldPath")))
        elif "resourceFieldRef" in value_from:
            declared[name] = resource_field_value(container, value_from["resourceFieldRef"])
        else:
            raise ConfigError(f"unsupported valueFrom for env {name}: {sorted(value_from)}")

    env = dict(base)
    env.update(declared)
    # No in-cluster config: clients must fall back to the KUBECONFIG we hand them.
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        env.pop(key, None)
    return env, declared


def rewrite_path(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    """Rewrite a container path under a mountPath to the materialised local directory.

    `mounts` is (mountPath, localPath) sorted longest mountPath first. Also handles the
    `--flag=/mount/path` form, which is how most CLIs take file arguments.
    """
    head, sep, tail = "", "", value
    if not value.startswith("/") and "=" in value:
        head, sep, tail = value.partition("=")
    for mount_path, local in mounts:
        mp = mount_path.rstrip("/") or "/"
        if tail == mp or tail.startswith(mp + "/"):
            return head + sep + local + tail[len(mp) :]
    return value


def container_argv(
    container: Mapping[str, Any],
    env: Mapping[str, str],
    python: str,
    mounts: Sequence[tuple[str, str]],
) -> list[str]:
    """The argv to run, with container paths under a mountPath rewritten.

    Our own interpreter, substituted for the image's, is a host path and is never rewritten:
    the project may live under a directory that a pod mounts (a clone under /tmp, say).
    """
    argv = build_argv(container, env, python)
    first = argv[0] if argv[0] == python else rewrite_path(argv[0], mounts)
    return [first, *(rewrite_path(a, mounts) for a in argv[1:])]


def volume_env_name(volume: str) -> str:
    return "CSVKAFKA_VOLUME_" + re.sub(r"[^A-Z0-9]", "_", volume.upper())


def _safe_rel(path: str) -> str:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts:
        raise ConfigError(f"invalid volume item path {path!r}", reason="ContainerCreating")
    return path


def volume_files(
    volume: Mapping[str, Any], *, secrets: DataLookup, configmaps: DataLookup
) -> list[tuple[str, bytes, int]] | None:
    """Files (relative path, content, mode) of a Secret/ConfigMap volume; None for other kinds.

    A missing non-optional source leaves a kubelet pod in ContainerCreating (FailedMount).
    """
    if "secret" in volume:
        src, lookup, label = volume["secret"], secrets, "secret"
        obj_name = str(src.get("secretName", ""))
    elif "configMap" in volume:
        src, lookup, label = volume["configMap"], configmaps, "configmap"
        obj_name = str(src.get("name", ""))
    else:
        return None
    default_mode = int(src.get("defaultMode") or 0o644)
    data = lookup(obj_name)
    if data is None:
        if src.get("optional"):
            return []
        raise ConfigError(
            f'MountVolume.SetUp failed for volume "{volume.get("name")}": '
            f'{label} "{obj_name}" not found',
            reason="ContainerCreating",
        )
    items = src.get("items")
    if not items:
        return [(_safe_rel(k), v, default_mode) for k, v in sorted(data.items())]
    files: list[tuple[str, bytes, int]] = []
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if src.get("optional"):
                continue
            raise ConfigError(
                f'MountVolume.SetUp failed for volume "{volume.get("name")}": '
                f"{label} {obj_name} references non-existent key {key}",
                reason="ContainerCreating",
            )
        mode = int(item.get("mode") or default_mode)
        files.append((_safe_rel(str(item.get("path") or key)), data[key], mode))
    return files


def exit_code_of(returncode: int) -> int:
    """Popen returncode → container exit code: killed by signal N → 128+N, like a shell."""
    return 128 - returncode if returncode < 0 else returncode


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def tail_text(
    data: bytes,
    max_bytes: int = TERMINATION_MESSAGE_MAX_BYTES,
    max_lines: int = TERMINATION_MESSAGE_MAX_LINES,
) -> str:
    """kubelet's FallbackToLogsOnError: the last lines of the log, bounded in size."""
    lines = data.splitlines()[-max_lines:]
    text = b"\n".join(lines)[-max_bytes:]
    return text.decode(errors="replace")


def pod_kubeconfig(
    cluster: Mapping[str, Any], token_file: str, token: str, namespace: str, user: str
) -> Obj:
    """A kubeconfig for the pod's process: our cluster entry, the pod's SA token as user.

    The token is inline (every client library supports that) and also on disk as tokenFile
    (client-go re-reads it, so kubectl keeps working after we refresh the token).
    """
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": dict(cluster)}],
        "users": [{"name": user, "user": {"token": token, "tokenFile": token_file}}],
        "contexts": [
            {"name": "pod", "context": {"cluster": "local", "user": user, "namespace": namespace}}
        ],
        "current-context": "pod",
    }


def cluster_entry(kubeconfig: Mapping[str, Any], base_dir: str, context: str | None = None) -> Obj:
    """The runner's cluster entry, with a CA file turned into inline data (portable)."""
    ctx_name = context or kubeconfig.get("current-context")
    ctx = next(c["context"] for c in kubeconfig.get("contexts") or [] if c["name"] == ctx_name)
    cluster = dict(
        next(c["cluster"] for c in kubeconfig.get("clusters") or [] if c["name"] == ctx["cluster"])
    )
    ca_file = cluster.pop("certificate-authority", None)
    if ca_file and "certificate-authority-data" not in cluster:
        ca_path = Path(base_dir, ca_file)
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    return cluster


def container_status(
    container: Mapping[str, Any],
    *,
    state: Obj,
    ready: bool,
    restart_count: int,
    container_id: str | None = None,
    last_state: Obj | None = None,
) -> Obj:
    status: Obj = {
        "name": container.get("name", ""),
        "image": container.get("image", ""),
        "imageID": "local://" + str(container.get("image", "")),
        "ready": ready,
        "started": "running" in state,
        "restartCount": restart_count,
        "state": state,
        "lastState": last_state or {},
    }
    if container_id:
        status["containerID"] = container_id
    return status


def _conditions(ready: bool, reason: str | None, started: bool = True) -> list[Obj]:
    ts = now_rfc3339()

    def cond(kind: str, ok: bool, why: str | None = None) -> Obj:
        c: Obj = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": ts,
        }
        if why and not ok:
            c["reason"] = why
        return c

    return [
        cond("PodReadyToStartContainers", started),
        cond("PodScheduled", True),
        cond("Initialized", True),
        cond("ContainersReady", ready, reason),
        cond("Ready", ready, reason),
    ]


def running_status(
    container: Mapping[str, Any],
    *,
    pid: int,
    started_at: str,
    start_time: str,
    restart_count: int,
    last_state: Obj | None = None,
) -> Obj:
    return {
        "phase": "Running",
        "startTime": start_time,
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": LOCAL_IP,
        "podIPs": [{"ip": LOCAL_IP}],
        "conditions": _conditions(True, None),
        "containerStatuses": [
            container_status(
                container,
                state={"running": {"startedAt": started_at}},
                ready=True,
                restart_count=restart_count,
                container_id=f"local://{pid}",
                last_state=last_state,
            )
        ],
    }


def terminated_state(
    *,
    exit_code: int,
    reason: str,
    started_at: str | None,
    finished_at: str,
    message: str = "",
    container_id: str | None = None,
    signal_no: int | None = None,
) -> Obj:
    term: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": finished_at}
    if started_at:
        term["startedAt"] = started_at
    if message:
        term["message"] = message
    if container_id:
        term["containerID"] = container_id
    if signal_no:
        term["signal"] = signal_no
    return {"terminated": term}


def terminal_status(
    container: Mapping[str, Any],
    *,
    exit_code: int,
    state: Obj,
    start_time: str | None,
    restart_count: int,
    reason: str | None = None,
    message: str | None = None,
    container_id: str | None = None,
) -> Obj:
    status: Obj = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": LOCAL_IP,
        "podIPs": [{"ip": LOCAL_IP}],
        "conditions": _conditions(False, "PodCompleted", started=False),
        "containerStatuses": [
            container_status(
                container,
                state=state,
                ready=False,
                restart_count=restart_count,
                container_id=container_id,
            )
        ],
    }
    if start_time:
        status["startTime"] = start_time
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


def waiting_status(
    container: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    restart_count: int = 0,
    last_state: Obj | None = None,
    phase: str = "Pending",
    start_time: str | None = None,
) -> Obj:
    status: Obj = {
        "phase": phase,
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "conditions": _conditions(False, "ContainersNotReady"),
        "containerStatuses": [
            container_status(
                container,
                state={"waiting": {"reason": reason, "message": message}},
                ready=False,
                restart_count=restart_count,
                last_state=last_state,
            )
        ],
    }
    if start_time:
        status["startTime"] = start_time
    return status


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def restart_backoff(restarts: int) -> float:
    # kubelet uses 10 s doubling to 5 min; tests cannot wait that long, so 1 s doubling to 30 s.
    return float(min(30, 2 ** max(0, restarts - 1)))


def schedulable_here(
    pod: Mapping[str, Any], node_name: str, node_labels: Mapping[str, str], mode: str = "all"
) -> bool:
    """Whether our scheduler should bind this pod to our node.

    mode "all" binds every pod whose nodeSelector we satisfy, "selected" only pods whose
    nodeSelector names our node (a second runner next to the main one), "none" nothing.
    """
    if mode == "none":
        return False
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if spec.get("nodeName") or meta.get("deletionTimestamp"):
        return False
    if (spec.get("schedulerName") or "default-scheduler") != "default-scheduler":
        return False
    if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return False
    # A nodeSelector lets a test pin pods to one of several runners.
    selector = spec.get("nodeSelector") or {}
    if mode == "selected" and selector.get("kubernetes.io/hostname") != node_name:
        return False
    return all(node_labels.get(k) == v for k, v in selector.items())


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


# --------------------------------------------------------------------------------------------
# API access
# --------------------------------------------------------------------------------------------


def api_json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
    """Call a client method and return the raw JSON body.

    Raw dicts avoid the client's model deserialisation, which lags behind the server's API
    (and trips on Binding responses, kubernetes-client/python#547).
    """
    # A bounded timeout: a hung connection must not freeze a worker or the heartbeat.
    kwargs.setdefault("_request_timeout", (5, 60))
    resp = call(*args, _preload_content=False, **kwargs)
    try:
        return cast(Obj, json.loads(resp.data or b"{}"))
    finally:
        resp.release_conn()


def with_retries(
    what: str,
    fn: Callable[[], Any],
    stop: threading.Event,
    abandon: Callable[[], bool] = lambda: False,
) -> bool:
    """Run an API write until it succeeds; True on success, False if the object is gone (404),
    the write is refused for good (4xx but throttling) or `abandon()` says it no longer matters.

    API server outages (tests inject them) must not lose a pod's final status, so transient
    errors are retried without limit, except once the runner is stopping (a few tries then).
    """
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            fn()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if 400 <= exc.status < 500 and exc.status != 429:
                log.warning("%s failed: %s %s", what, exc.status, (exc.body or "")[:300])
                return False
            error = f"{exc.status} {exc.reason}"
        except Exception as exc:  # connection refused, timeouts...
            error = repr(exc)
        if abandon():
            return False
        if stop.is_set() and attempt >= 5:
            log.warning("%s failed: %s; giving up (shutting down)", what, error)
            return False
        if attempt in (3, 20) or attempt % 100 == 0:
            log.warning("%s still failing after %d tries: %s", what, attempt, error)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def proc_start_time(pid: int) -> str | None:
    """Process start time (clock ticks since boot): tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclasses.dataclass
class Options:
    node_name: str
    state_dir: Path
    python: str
    workdir: str
    bind: str
    cluster: Obj
    base_env: dict[str, str]


@dataclasses.dataclass
class Prepared:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    container: Obj


# --------------------------------------------------------------------------------------------
# One pod: a thread that prepares, starts, supervises and reports the pod's process
# --------------------------------------------------------------------------------------------


class PodWorker(threading.Thread):
    def __init__(self, runner: Runner, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.opts = runner.opts
        self.v1 = client.CoreV1Api(runner.api)
        self.pod = pod
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.key = f"{self.ns}/{self.name}"
        self.pod_dir = self.opts.state_dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.log_path = self.opts.state_dir / "pods" / f"{self.ns}_{self.name}.log"
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.gone = False  # the Pod object no longer exists
        self.done = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.token_expires = 0.0
        self.active_since = 0.0

    # ---- called from the watcher thread ----
    def update(self, pod: Obj | None) -> None:
        with self.lock:
            if pod is None:
                self.gone = True
            else:
                self.pod = pod
        self.wake.set()

    # ---- state helpers ----
    def _deleting(self) -> bool:
        with self.lock:
            return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    def _stopping(self) -> bool:
        return self.runner.stop.is_set()

    def _pause(self, seconds: float) -> None:
        """Sleep, but return early when the pod is deleted or the runner stops.

        Plain pod updates (our own status writes among them) must not cut the pause short.
        """
        deadline = time.monotonic() + seconds
        while not (self._deleting() or self._stopping()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.wake.wait(left)
            self.wake.clear()

    def event(self, what: str, detail: str = "") -> None:
        log.info("%-10s %s %s", what, self.key, detail)

    def patch_status(self, status: Obj) -> bool:
        if self.gone:
            return False
        body = {"metadata": {"uid": self.uid}, "status": status}
        return with_retries(
            f"status of {self.key}",
            lambda: api_json(
                self.v1.patch_namespaced_pod_status, self.name, self.ns, body, _content_type=SMP
            ),
            self.runner.stop,
            abandon=lambda: self.gone,
        )

    def delete_now(self) -> None:
        if self.gone:
            return
        self.runner.delete_pod(self.ns, self.name, self.uid)

    # ---- lifecycle ----
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.error("worker for %s crashed:\n%s", self.key, traceback.format_exc())
            if self.proc is not None and self.proc.poll() is None:
                kill_group(self.proc.pid, signal.SIGKILL)
        finally:
            self.done = True

    def _run(self) -> None:
        container = self.pod["spec"]["containers"][0]
        phase = (self.pod.get("status") or {}).get("phase") or "Pending"
        if phase == "Running":
            self._node_lost(container)
            return
        containers = self.pod["spec"]["containers"]
        if len(containers) > 1:
            log.warning(
                "%s has %d containers; running only %r",
                self.key,
                len(containers),
                container.get("name"),
            )
        if self.pod["spec"].get("initContainers"):
            log.warning("%s: init containers are not run by the pod runner", self.key)
        policy = self.pod["spec"].get("restartPolicy") or "Always"

        restarts = 0
        last_state: Obj | None = None
        start_time: str | None = None
        last_wait = ""
        while True:
            if self._deleting() or self._stopping():
                if start_time is None:
                    # Never started: a deleted pod is finished; on shutdown it stays Pending
                    # for the next runner instance.
                    if self._deleting():
                        self._never_started(container)
                else:
                    # Between restarts (CrashLoopBackOff): the last exit is the final word.
                    code = int((last_state or {}).get("terminated", {}).get("exitCode", 137))
                    self.patch_status(
                        terminal_status(
                            container,
                            exit_code=code,
                            state=last_state or {},
                            start_time=start_time,
                            restart_count=restarts,
                        )
                    )
                break
            try:
                try:
                    prepared = self._prepare()
                except ConfigError:
                    raise
                except Exception as exc:  # e.g. a volume that cannot be written
                    raise ConfigError(repr(exc), reason="CreateContainerError") from exc
            except ConfigError as exc:
                if exc.reason == "StartError":
                    start_time = start_time or now_rfc3339()
                    self._start_error(container, str(exc), start_time, restarts)
                    break
                if f"{exc.reason}: {exc}" != last_wait:  # report changes, not every retry
                    last_wait = f"{exc.reason}: {exc}"
                    self.event("waiting", last_wait)
                    self.patch_status(
                        waiting_status(
                            container,
                            reason=exc.reason,
                            message=str(exc),
                            restart_count=restarts,
                            last_state=last_state,
                            phase="Running" if start_time else "Pending",
                            start_time=start_time,
                        )
                    )
                self._pause(CONFIG_RETRY_SECONDS)
                continue

            last_wait = ""
            started_at = now_rfc3339()
            if start_time is None:
                start_time, self.active_since = started_at, time.monotonic()
            log_offset = self._log_size()
            try:
                self.proc = self._spawn(prepared)
            except OSError as exc:
                self._start_error(
                    container, f"failed to start {prepared.argv[0]!r}: {exc}", start_time, restarts
                )
                break
            pid = self.proc.pid
            # The spec's command, not the expanded argv: expansion may have pulled in secrets.
            spec_argv = (container.get("command") or []) + (container.get("args") or [])
            self.event("started", f"pid={pid} command={str(spec_argv)[:300]}")
            self.patch_status(
                running_status(
                    container,
                    pid=pid,
                    started_at=started_at,
                    start_time=start_time,
                    restart_count=restarts,
                    last_state=last_state,
                )
            )
            cause = self._supervise(prepared)
            rc = self.proc.wait()
            # Reap the rest of the group: a container's processes all die with it.
            kill_group(pid, signal.SIGKILL)
            code = exit_code_of(rc)
            finished_at = now_rfc3339()
            message = self._termination_message(container, code, log_offset)
            state = terminated_state(
                exit_code=code,
                reason=terminated_reason(code),
                started_at=started_at,
                finished_at=finished_at,
                message=message,
                container_id=f"local://{pid}",
                signal_no=-rc if rc < 0 else None,
            )
            self.event("exited", f"pid={pid} exitCode={code} ({cause})")
            self._remove_pidfile()

            if cause == "exit" and should_restart(policy, code) and not self._deleting():
                restarts += 1
                last_state = state
                backoff = restart_backoff(restarts)
                self.event("backoff", f"restart #{restarts} in {backoff:.0f}s")
                self.patch_status(
                    waiting_status(
                        container,
                        reason="CrashLoopBackOff",
                        message=f"back-off {backoff:.0f}s restarting failed container",
                        restart_count=restarts,
                        last_state=last_state,
                        phase="Running",
                        start_time=start_time,
                    )
                )
                self._pause(backoff)
                continue

            reason, pod_message = None, None
            if cause == "deadline":
                reason = "DeadlineExceeded"
                pod_message = "Pod was active on the node longer than the specified deadline"
            elif cause == "shutdown":
                pod_message = "the pod runner shut down and killed the process"
            self.patch_status(
                terminal_status(
                    container,
                    exit_code=code,
                    state=state,
                    start_time=start_time,
                    restart_count=restarts,
                    reason=reason,
                    message=pod_message,
                    container_id=f"local://{pid}",
                )
            )
            self.event("finished", "Succeeded" if code == 0 else f"Failed exitCode={code}")
            break

        if self._deleting():
            self.delete_now()

    def _supervise(self, prepared: Prepared) -> str:
        """Wait for the process; kill it on deletion, deadline or shutdown. Returns the cause."""
        assert self.proc is not None
        deadline_s = self.pod["spec"].get("activeDeadlineSeconds")
        while True:
            try:
                self.proc.wait(timeout=0.5)
                return "exit"
            except subprocess.TimeoutExpired:
                pass
            if self._stopping():
                self._kill(grace=3.0)
                return "shutdown"
            if self._deleting():
                with self.lock:
                    meta = self.pod["metadata"]
                    grace = meta.get("deletionGracePeriodSeconds")
                    if grace is None:
                        grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
                self.event("killing", f"pod deleted, grace {min(float(grace), MAX_GRACE_SECONDS)}s")
                self._kill(grace=min(float(grace), MAX_GRACE_SECONDS))
                return "deleted"
            # The deadline counts from the pod's first start, across restarts.
            if deadline_s is not None and time.monotonic() - self.active_since > float(deadline_s):
                self.event("killing", "activeDeadlineSeconds exceeded")
                self._kill(
                    grace=min(
                        float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                        MAX_GRACE_SECONDS,
                    )
                )
                return "deadline"
            if self.token_expires and time.time() > self.token_expires - 0.2 * (
                TOKEN_EXPIRATION_SECONDS
            ):
                # Refresh at 80 % of the lifetime, as kubelet does for projected tokens.
                try:
                    self._write_identity(prepared.container)
                except ConfigError as exc:
                    log.warning("token refresh for %s failed: %s", self.key, exc)
                    self.token_expires += 60  # try again in a minute, not every tick

    def _kill(self, grace: float) -> None:
        assert self.proc is not None
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, signal.SIGKILL)

    def _never_started(self, container: Obj) -> None:
        if self.gone:
            return
        self.event("finished", "deleted before its process started")
        state = terminated_state(
            exit_code=137,
            reason="ContainerStatusUnknown",
            started_at=None,
            finished_at=now_rfc3339(),
            message="The container could not be located when the pod was terminated",
        )
        self.patch_status(
            terminal_status(container, exit_code=137, state=state, start_time=None, restart_count=0)
        )

    def _start_error(self, container: Obj, message: str, start_time: str, restarts: int) -> None:
        self.event("failed", f"StartError: {message}")
        state = terminated_state(
            exit_code=128,
            reason="StartError",
            started_at=None,
            finished_at=now_rfc3339(),
            message=message,
        )
        self.patch_status(
            terminal_status(
                container, exit_code=128, state=state, start_time=start_time, restart_count=restarts
            )
        )

    def _node_lost(self, container: Obj) -> None:
        """A pod left Running by a previous runner instance: its process is gone (or orphaned)."""
        pidfile = self.pod_dir / "pid"
        with contextlib.suppress(OSError, ValueError):
            pid_s, start_s = pidfile.read_text().split()
            if proc_start_time(int(pid_s)) == start_s:
                kill_group(int(pid_s), signal.SIGKILL)
        self.event("lost", "Running pod from a previous runner; marking Failed")
        old = ((self.pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        state = terminated_state(
            exit_code=137,
            reason="ContainerStatusUnknown",
            started_at=(old.get("state") or {}).get("running", {}).get("startedAt"),
            finished_at=now_rfc3339(),
            message="The pod runner restarted; the container's process is gone",
        )
        self.patch_status(
            terminal_status(
                container,
                exit_code=137,
                state=state,
                start_time=(self.pod.get("status") or {}).get("startTime"),
                restart_count=int(old.get("restartCount") or 0),
                reason="NodeLost",
                message=f"Node {self.opts.node_name} restarted while the pod was running",
            )
        )
        if self._deleting():
            self.delete_now()

    # ---- preparing a start ----
    def _lookup(self, kind: str) -> DataLookup:
        cache: dict[str, Mapping[str, bytes] | None] = {}
        read = (
            self.v1.read_namespaced_secret
            if kind == "secret"
            else self.v1.read_namespaced_config_map
        )
        decode = decode_secret_data if kind == "secret" else decode_configmap_data

        def lookup(name: str) -> Mapping[str, bytes] | None:
            if name not in cache:
                try:
                    cache[name] = decode(api_json(read, name, self.ns))
                except ApiException as exc:
                    if exc.status != 404:
                        raise ConfigError(f"reading {kind} {name!r}: {exc.status}") from exc
                    cache[name] = None
                except Exception as exc:  # API server unreachable: retry later
                    raise ConfigError(f"reading {kind} {name!r}: {exc!r}") from exc
            return cache[name]

        return lookup

    def _prepare(self) -> Prepared:
        with self.lock:
            pod = self.pod
        container: Obj = pod["spec"]["containers"][0]
        secrets, configmaps = self._lookup("secret"), self._lookup("configmap")
        env, declared = resolve_env(
            pod, container, secrets=secrets, configmaps=configmaps, base=self.opts.base_env
        )
        # A container runtime sets HOSTNAME to the pod's hostname; the pod's env may override it.
        env = {"HOSTNAME": pod["spec"].get("hostname") or self.name, **env}
        self.pod_dir.mkdir(parents=True, exist_ok=True)

        volume_dirs: dict[str, str] = {}
        for volume in pod["spec"].get("volumes") or []:
            local = self._materialise(volume, secrets, configmaps)
            if local:
                volume_dirs[volume["name"]] = local
                env[volume_env_name(volume["name"])] = local
        mounts: list[tuple[str, str]] = []
        for vm in container.get("volumeMounts") or []:
            vol_dir = volume_dirs.get(vm.get("name", ""))
            if vol_dir and vm.get("mountPath"):
                sub = vm.get("subPath") or ""
                mounts.append((vm["mountPath"], os.path.join(vol_dir, sub) if sub else vol_dir))
        term_path = container.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append((term_path, str(self.pod_dir / "termination-log")))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)

        for k in declared:
            env[k] = rewrite_path(env[k], mounts)
        # `$(VAR)` in command/args sees only the container's declared env, as in Kubernetes.
        argv = container_argv(container, declared, self.opts.python, mounts)

        if pod["spec"].get("automountServiceAccountToken") is not False:
            env["KUBECONFIG"] = self._write_identity(container)
        else:
            env.pop("KUBECONFIG", None)

        working_dir = container.get("workingDir")
        if working_dir:
            working_dir = rewrite_path(working_dir, mounts)
            cwd = working_dir if os.path.isdir(working_dir) else str(self.pod_dir)
        else:
            # The image's WORKDIR is the project: default to the runner's working directory.
            cwd = self.opts.workdir
        return Prepared(argv=argv, env=env, cwd=cwd, container=container)

    def _materialise(self, volume: Obj, secrets: DataLookup, configmaps: DataLookup) -> str:
        name = volume.get("name", "")
        target = self.pod_dir / "volumes" / name
        if "hostPath" in volume:
            # We are the host: the path is right here.
            return str(volume["hostPath"].get("path", ""))
        if "projected" in volume:
            return ""  # the kube-api-access volume: identity comes through KUBECONFIG instead
        files = volume_files(volume, secrets=secrets, configmaps=configmaps)
        if files is None:
            if "emptyDir" not in volume:
                log.warning("%s: volume %r of unsupported kind, using an empty dir", self.key, name)
            target.mkdir(parents=True, exist_ok=True)  # survives container restarts
            return str(target)
        # Rewritten on every start, so a restart sees current Secret/ConfigMap data.
        staging = target.with_name(f".{name}.new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for rel, content, mode in files:
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode & 0o777)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return str(target)

    def _write_identity(self, container: Obj) -> str:
        """TokenRequest for the pod's ServiceAccount, bound to the pod; written as a kubeconfig."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [],  # empty: the API server's own audiences
                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            },
        }
        try:
            resp = api_json(self.v1.create_namespaced_service_account_token, sa, self.ns, body)
        except ApiException as exc:
            detail = (
                (exc.body or "")[:300]
                if exc.status != 404
                else (f'serviceaccount "{sa}" not found')
            )
            raise ConfigError(f"token request for {self.ns}/{sa} failed: {detail}") from exc
        except Exception as exc:
            raise ConfigError(f"token request for {self.ns}/{sa} failed: {exc!r}") from exc
        token = str(resp["status"]["token"])
        self.token_expires = time.time() + TOKEN_EXPIRATION_SECONDS
        token_file = self.pod_dir / "token"
        kubeconfig_file = self.pod_dir / "kubeconfig"
        user = f"system:serviceaccount:{self.ns}:{sa}"
        kc = pod_kubeconfig(self.opts.cluster, str(token_file), token, self.ns, user)
        for path, text in ((token_file, token), (kubeconfig_file, yaml.safe_dump(kc))):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.chmod(0o600)
            os.replace(tmp, path)
        return str(kubeconfig_file)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _spawn(self, prepared: Prepared) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(
                prepared.argv,
                env=prepared.env,
                cwd=prepared.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        # pid + start time lets a later runner instance kill this process if we die.
        start = proc_start_time(proc.pid)
        if start:
            (self.pod_dir / "pid").write_text(f"{proc.pid} {start}\n")
        return proc

    def _remove_pidfile(self) -> None:
        with contextlib.suppress(OSError):
            (self.pod_dir / "pid").unlink()

    def _termination_message(self, container: Obj, exit_code: int, log_offset: int) -> str:
        with contextlib.suppress(OSError):
            msg = (self.pod_dir / "termination-log").read_bytes()
            if msg.strip():
                return msg[:TERMINATION_MESSAGE_MAX_BYTES].decode(errors="replace")
        if exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
                size = self.log_path.stat().st_size
                f.seek(max(log_offset, size - 64 * 1024))
                return tail_text(f.read())
        return ""


# --------------------------------------------------------------------------------------------
# The runner: node registration and heartbeats, the pod watch, scheduling, dispatch
# --------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, opts: Options, api: client.ApiClient, watch_api: client.ApiClient) -> None:
        self.opts = opts
        self.api = api
        self.watch_api = watch_api
        self.v1 = client.CoreV1Api(api)
        self.stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.deleted_uids: set[str] = set()
        self.workers_lock = threading.Lock()
        self.node_labels = {
            "kubernetes.io/hostname": opts.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            ),
            "csvkafka.dev/podrunner": "true",
        }
        self.started = now_rfc3339()

    # ---- node ----
    def register_node(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.opts.node_name, "labels": self.node_labels},
        }
        try:
            api_json(self.v1.create_node, body)
            log.info("%-10s node/%s", "registered", self.opts.node_name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            api_json(
                self.v1.patch_node,
                self.opts.node_name,
                {"metadata": {"labels": self.node_labels}},
                _content_type=MERGE,
            )
            log.info("%-10s node/%s (existing)", "registered", self.opts.node_name)
        self.update_node_status(ready=True)
        self.renew_lease()

    def _node_status(self, ready: bool) -> Obj:
        ts = now_rfc3339()
        mem_kib = 8 * 1024 * 1024
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{mem_kib}Ki",
            "pods": "250",
            "ephemeral-storage": "100Gi",
        }

        def cond(kind: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": ts,
                "lastTransitionTime": self.started,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond(
                    "Ready",
                    "True" if ready else "False",
                    "KubeletReady" if ready else "KubeletNotReady",
                    "pod runner is posting ready status" if ready else "pod runner stopped",
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOCAL_IP},
                {"type": "Hostname", "address": self.opts.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "local processes",
                "containerRuntimeVersion": "local://podrunner",
                "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self.node_labels["kubernetes.io/arch"],
            },
        }

    def update_node_status(self, ready: bool) -> None:
        api_json(
            self.v1.patch_node_status,
            self.opts.node_name,
            {"status": self._node_status(ready)},
            _content_type=SMP,
        )

    def renew_lease(self) -> None:
        coord = client.CoordinationV1Api(self.api)
        name, ns = self.opts.node_name, "kube-node-lease"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            api_json(coord.patch_namespaced_lease, name, ns, {"spec": spec}, _content_type=MERGE)
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = api_json(self.v1.read_node, name)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": spec,
            }
            api_json(coord.create_namespaced_lease, ns, body)

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stop.wait(LEASE_RENEW_SECONDS):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= NODE_STATUS_SECONDS:
                    self.update_node_status(ready=True)
                    last_status = time.monotonic()
            except ApiException as exc:
                if exc.status == 404:  # someone deleted our Node: register again
                    with contextlib.suppress(Exception):
                        self.register_node()
                else:
                    log.warning("heartbeat failed: %s", exc.status)
            except Exception as exc:
                log.warning("heartbeat failed: %r", exc)

    # ---- pods ----
    def delete_pod(self, ns: str, name: str, uid: str) -> None:
        """Final deletion (grace 0) of a terminal pod; the uid precondition protects a
        re-created pod of the same name."""
        with self.workers_lock:
            if uid in self.deleted_uids:
                return
            self.deleted_uids.add(uid)
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        ok = with_retries(
            f"delete of {ns}/{name}",
            lambda: api_json(
                self.v1.delete_namespaced_pod, name, ns, body=body, grace_period_seconds=0
            ),
            self.stop,
        )
        if ok:
            log.info("%-10s %s/%s", "deleted", ns, name)
        else:
            with self.workers_lock:  # let a later event try again
                self.deleted_uids.discard(uid)

    def bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.opts.node_name},
        }
        try:
            api_json(self.v1.create_namespaced_binding, meta["namespace"], body)
            log.info("%-10s %s -> %s", "scheduled", pod_key(pod), self.opts.node_name)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning(
                    "binding %s failed: %s %s", pod_key(pod), exc.status, (exc.body or "")[:200]
                )

    def handle(self, kind: str, pod: Obj) -> None:
        """Route one watch event; must never raise (one bad pod must not stop the watch)."""
        try:
            self._handle(kind, pod)
        except Exception:
            log.error("handling %s %s failed:\n%s", kind, pod_key(pod), traceback.format_exc())

    def _handle(self, kind: str, pod: Obj) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = meta.get("uid", "")
        with self.workers_lock:
            worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.update(None)
                with self.workers_lock:
                    self.workers.pop(uid, None)
            with self.workers_lock:
                self.deleted_uids.discard(uid)
            return
        if schedulable_here(pod, self.opts.node_name, self.node_labels, self.opts.bind):
            self.bind(pod)
            return
        if spec.get("nodeName") != self.opts.node_name:
            return
        if worker is not None and not worker.done:
            worker.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if worker is not None or phase in TERMINAL_PHASES:
            # Finished pods are left alone; once deleted, we confirm the deletion.
            if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") != 0:
                threading.Thread(
                    target=self.delete_pod, daemon=True, args=(meta["namespace"], meta["name"], uid)
                ).start()
            return
        if self.stop.is_set():
            return
        worker = PodWorker(self, pod)
        with self.workers_lock:
            self.workers[uid] = worker
        worker.start()

    def watch_loop(self) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone or errors."""
        v1 = client.CoreV1Api(self.watch_api)
        backoff = 1.0
        while not self.stop.is_set():
            try:
                listing = api_json(v1.list_pod_for_all_namespaces)
                rv = listing["metadata"]["resourceVersion"]
                seen = {p["metadata"]["uid"] for p in listing.get("items") or []}
                with self.workers_lock:
                    vanished = [(u, w) for u, w in self.workers.items() if u not in seen]
                for _uid, w in vanished:
                    self.handle("DELETED", w.pod)
                for pod in listing.get("items") or []:
                    self.handle("ADDED", pod)
                backoff = 1.0
                while not self.stop.is_set():
                    rv = self._watch_once(v1, rv)
            except _Gone:
                log.info("watch expired (410); relisting")
            except Exception as exc:
                if self.stop.is_set():
                    break
                log.warning("pod watch failed: %r; relisting in %.0fs", exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)  # outages in tests are short: recover fast

    def _watch_once(self, v1: client.CoreV1Api, rv: str) -> str:
        resp = v1.list_pod_for_all_namespaces(
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=240,
            _preload_content=False,
            _request_timeout=(10, 300),
        )
        try:
            for event in _json_lines(resp):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.handle(str(kind), obj)
                if self.stop.is_set():
                    break
        finally:
            resp.release_conn()
        return rv

    # ---- shutdown ----
    def shutdown(self) -> None:
        log.info("%-10s stopping: killing processes and marking their pods Failed", "shutdown")
        self.stop.set()
        with self.workers_lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        deadline = time.monotonic() + 20
        for w in workers:
            w.join(timeout=max(0.1, deadline - time.monotonic()))
        for w in workers:  # anything still alive gets no more courtesy
            if w.proc is not None and w.proc.poll() is None:
                kill_group(w.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.update_node_status(ready=False)
        log.info("%-10s done", "shutdown")


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def _json_lines(resp: Any) -> Iterator[Obj]:
    buf = b""
    for chunk in resp.stream(65536, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield cast(Obj, json.loads(line))
    if buf.strip():
        yield cast(Obj, json.loads(buf))


def base_env(python: str) -> dict[str, str]:
    """A minimal environment, like an image's: PATH (with our interpreter's bin first, so the
    project's console scripts resolve), HOME, LANG."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    bin_dir = os.path.dirname(python)
    if bin_dir and bin_dir not in path.split(os.pathsep):
        path = bin_dir + os.pathsep + path
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
    }
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context", default=None)
    parser.add_argument("--node-name", default="local-runner")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that replaces `python`/`python3` in pod commands",
    )
    parser.add_argument(
        "--workdir",
        default=os.getcwd(),
        help="working directory of processes whose container has no workingDir",
    )
    parser.add_argument(
        "--bind",
        choices=("all", "selected", "none"),
        default="all",
        help="which unscheduled pods to bind to this node: all (default), only "
        "those whose nodeSelector names this node, or none",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.Formatter.converter = time.gmtime

    kubeconfig_path = os.path.abspath(args.kubeconfig)
    raw_kubeconfig = yaml.safe_load(Path(kubeconfig_path).read_text())
    cluster = cluster_entry(raw_kubeconfig, os.path.dirname(kubeconfig_path), args.context)

    def api_client() -> client.ApiClient:
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=kubeconfig_path, context=args.context, client_configuration=cfg
        )
        cfg.connection_pool_maxsize = 64  # one worker thread per pod shares this pool
        return client.ApiClient(cfg)

    python = os.path.abspath(args.python) if os.sep in args.python else args.python
    opts = Options(
        node_name=args.node_name,
        state_dir=Path(args.state_dir).resolve(),
        python=python,
        workdir=os.path.abspath(args.workdir),
        bind=args.bind,
        cluster=cluster,
        base_env=base_env(python),
    )
    (opts.state_dir / "pods").mkdir(parents=True, exist_ok=True)
    runner = Runner(opts, api_client(), api_client())
    # After the clients: their Configuration resets urllib3's level. Retries are logged by us.
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    def on_signal(signum: int, _frame: object) -> None:
        runner.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    delay = 1.0
    while not runner.stop.is_set():
        try:
            runner.register_node()
            break
        except Exception as exc:  # the API server may still be starting
            log.warning("node registration failed: %r; retrying", exc)
            runner.stop.wait(delay)
            delay = min(delay * 2, 10)
    threading.Thread(target=runner.heartbeat_loop, name="heartbeat", daemon=True).start()
    threading.Thread(target=runner.watch_loop, name="watch", daemon=True).start()
    log.info(
        "%-10s node/%s state=%s python=%s", "ready", opts.node_name, opts.state_dir, opts.python
    )
    while not runner.stop.wait(1.0):
        pass
    runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
