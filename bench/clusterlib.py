"""What the benchmark scripts (``soak.py``, ``load.py``, ``bad_rows.py``) share with the tests
that run them shorter (``tests/faults/test_soak.py``, ``test_load.py``, ``test_bad_rows.py``):
the environment, a namespace with a data volume, the files, a worker's process as the node sees
it and its rate, Prometheus text, a least-squares slope, percentiles.

Imported as ``clusterlib`` by the scripts (their directory is first on ``sys.path``) and as
``bench.clusterlib`` by the tests; it imports the tests' node helpers (``tests/node.py``), so
the two never drift.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: never shadows what the caller imports

from tests.node import (  # noqa: E402
    DataVolume as DataVolume,  # re-exported: the scripts' callers pass one
)
from tests.node import container_pid, create_data_volume, delete_data_volume  # noqa: E402

GROUP, VERSION, PLURAL = "csvkafka.io", "v1alpha1", "csvingestions"
OPERATOR_NS = "csvkafka-system"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:csvkafka-operator"
OPERATOR_LEASE = "csvkafka-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=csvkafka-operator"
OPERATOR_METRICS_PORT = 9090
WORKER_CONTAINER = "worker"


def load_env() -> dict[str, str]:
    """The environment's env file (KUBECONFIG, KAFKA_BOOTSTRAP_SERVERS, PATH with kubectl and
    crictl, CONTAINER_RUNTIME_ENDPOINT), into this process's environment too."""
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    out = subprocess.run(["bash", "-c", f'source "{state}/env" && env -0'],
                         check=True, capture_output=True).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    os.environ.update(env)
    return env


def api_client() -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=os.environ["KUBECONFIG"])


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def make_namespace(api: Any, prefix: str) -> tuple[str, DataVolume]:
    """A fresh namespace enforcing Pod Security ``restricted``, with the claim ``data`` on a
    host directory (as the tests' ``namespace`` and ``data`` fixtures make)."""
    from kubernetes import client

    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                               "pod-security.kubernetes.io/enforce-version": "latest"}}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the controller-manager adds the default account
        try:
            core.read_namespaced_service_account("default", ns)
            break
        except client.ApiException:
            time.sleep(0.1)
    state = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv"))
    return ns, create_data_volume(api, ns, state / "data")


def drop_namespace(api: Any, ns: str, data: DataVolume) -> None:
    import shutil

    from kubernetes import client

    client.CoreV1Api(api).delete_namespace(ns, propagation_policy="Background")
    delete_data_volume(api, ns)
    shutil.rmtree(data.path, ignore_errors=True)


def ingestion_body(name: str, source: dict[str, Any], topic: str, bootstrap: str,
                   **spec: Any) -> dict[str, Any]:
    """A CsvIngestion (as ``tests.operator.test_operator.ingestion`` makes them)."""
    kafka = {"bootstrapServers": bootstrap, "topic": topic, **spec.pop("kafka", {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "CsvIngestion", "metadata": {"name": name},
        "spec": {"source": source, "kafka": kafka,
                 "worker": {"parallelism": 1, "backoffLimit": 3, **spec.pop("worker", {})},
                 **spec},
    }


def write_rows(path: Path, rows: int, start: int = 0) -> Path:
    """``id,name,amount`` rows as ``tests.operator.conftest.write_csv`` writes them, in blocks
    (tens of millions of rows in seconds)."""
    block = 100_000
    with path.open("w") as f:
        f.write("id,name,amount\n")
        for lo in range(start, start + rows, block):
            hi = min(lo + block, start + rows)
            f.write("".join(f"{i},name-{i},{i % 1000}.5\n" for i in range(lo, hi)))
    return path


def write_mostly_bad(path: Path, rows: int) -> tuple[Path, list[int]]:
    """Rows as :func:`write_rows` writes them, but only every tenth good; of the others, half
    with a field missing and half with an amount that is not a float. Returns the file and the
    physical lines of its bad rows."""
    bad_lines: list[int] = []
    with path.open("w") as f:
        f.write("id,name,amount\n")
        parts = []
        for i in range(rows):
            if i % 10 == 0:
                parts.append(f"{i},name-{i},{i % 1000}.5\n")
            else:
                bad_lines.append(i + 2)
                parts.append(f"{i},name-{i}\n" if i % 2 else f"{i},name-{i},x{i}\n")
            if len(parts) >= 100_000:
                f.write("".join(parts))
                parts = []
        f.write("".join(parts))
    return path, bad_lines


def _seconds(text: str) -> float:
    """``fmt_duration``'s text back to seconds: 12.3s, 4m05s, 1h02m03s."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    if not m or not text:
        raise ValueError(f"not a duration: {text!r}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def finished_rate(log: str) -> float:
    """Rows read per second of a worker's run, from the line it logs at the end ("Finished
    file ... (Duration: 4.2s, Rows: 400000)", and its ``duration_s`` to the millisecond): the
    run itself, not the process's start."""
    found = re.search(r"Finished file .*\(Duration: (\S+), Rows: (\d+)\).*", log)
    if not found:
        raise ValueError("no 'Finished file' line in the worker's log")
    exact = re.search(r'"duration_s":\s*([0-9.]+)', found.group(0))
    seconds = float(exact.group(1)) if exact else _seconds(found.group(1))
    return int(found.group(2)) / max(seconds, 1e-3)


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for i in range(0, len(names), 200):  # one request per 200: the broker's answer stays short
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names[i:i + 200]],
                                      operation_timeout=60)
        for f in futures.values():
            f.result(timeout=120)


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for i in range(0, len(names), 200):
        for f in admin.delete_topics(list(names[i:i + 200]), operation_timeout=60).values():
            try:
                f.result(timeout=120)
            except Exception as e:  # a leftover topic is not worth failing a finished run
                print(f"could not delete a topic: {e}", file=sys.stderr)


# --- a worker's process, as the node sees it ---------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    t: float
    """Seconds since the sampling started."""
    rss_bytes: int
    fds: int
    threads: int


def proc_sample(pid: int, t: float) -> ProcSample | None:
    """RSS, open file descriptors and threads of a host process (a container's main process:
    the node shares the host's kernel), None once it is gone. From /proc, as root: the worker's
    own metrics carry no process metrics (its registry is per run, without the process
    collector)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    return ProcSample(t, rss_kib * 1024, fds, int(fields["Threads"]))


def running_worker_pid(ns: str, job: str) -> tuple[str, int] | None:
    """The running pod of a Job and its worker's host pid, if one runs."""
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", f"job-name={job}", "-o", "json"))
    for pod in pods["items"]:
        name = pod["metadata"]["name"]
        pid = container_pid(ns, name, WORKER_CONTAINER)
        if pid is not None:
            return name, pid
    return None


class WorkerSampler:
    """Samples a Job's worker process every ``interval_s`` in a thread, from its first running
    pod to the end of that process (or :meth:`stop`)."""

    def __init__(self, ns: str, job: str, interval_s: float = 0.5) -> None:
        import threading

        self.ns, self.job, self.interval_s = ns, job, interval_s
        self.samples: list[ProcSample] = []
        self.pods: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        t0 = time.monotonic()
        found = None
        while found is None and not self._stop.is_set():
            found = running_worker_pid(self.ns, self.job)
            if found is None:
                time.sleep(0.1)
        if found is None:
            return
        pod, pid = found
        self.pods.append(pod)
        while not self._stop.is_set():
            sample = proc_sample(pid, time.monotonic() - t0)
            if sample is None:
                return
            self.samples.append(sample)
            self._stop.wait(self.interval_s)

    def rss_mib(self) -> tuple[float, float, float]:
        """Peak RSS, and the median of the first and of the last third of the samples (MiB):
        flat memory has the two medians close."""
        rss = [s.rss_bytes / 2**20 for s in self.samples]
        if not rss:
            return (math.nan, math.nan, math.nan)
        third = max(1, len(rss) // 3)
        return max(rss), percentile(rss[:third], 50), percentile(rss[-third:], 50)


# --- the operator ------------------------------------------------------------------------------


def operator_pod() -> dict[str, Any] | None:
    """The active operator: the ready pod that holds the Lease (the only one without leader
    election)."""
    pods = json.loads(kubectl("get", "pods", "-n", OPERATOR_NS, "-l", OPERATOR_SELECTOR,
                              "-o", "json"))["items"]
    ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in p.get("status", {}).get("conditions", []))]
    lease = kubectl("get", "lease", "-n", OPERATOR_NS, OPERATOR_LEASE, "-o", "json", check=False)
    if not lease:
        return ready[0] if ready else None
    holder = (json.loads(lease).get("spec") or {}).get("holderIdentity")
    return next((p for p in ready if p["metadata"]["name"] == holder), None)


def operator_restarts() -> dict[str, int]:
    """Container restarts of every operator pod, by pod (an OOM kill shows here)."""
    pods = json.loads(kubectl("get", "pods", "-n", OPERATOR_NS, "-l", OPERATOR_SELECTOR,
                              "-o", "json"))["items"]
    return {p["metadata"]["name"]: sum(int(c.get("restartCount", 0))
                                       for c in p.get("status", {}).get("containerStatuses", []))
            for p in pods}


def scrape(ip: str, port: int, timeout: float = 5.0) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=timeout) as resp:
        text: str = resp.read().decode()
        return text


def prom_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus' text format."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


# --- figures -----------------------------------------------------------------------------------


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) points, per minute (0 for fewer than 2)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
