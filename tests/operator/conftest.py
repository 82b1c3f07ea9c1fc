"""Fixtures for the operator's integration tests: the operator as its Deployment, installed by
the local environment from ``manifests/`` and this tree's image, watching every namespace (two
replicas, the holder of the Lease active); the tests stop, kill and restart it the way a cluster
would."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, TestEnv, run_kubectl
from tests.node import kill_container

OPERATOR_NS = "csvkafka-system"
OPERATOR_SA = "csvkafka-operator"
OPERATOR_DEPLOY = "csvkafka-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=csvkafka-operator"
OPERATOR_LEASE = "csvkafka-operator"  # leader election (operator/ingest_operator/leader.py)


@pytest.fixture(scope="session")
def crd_installed(testenv: TestEnv) -> None:
    """The environment installs the CRD with the operator; this waits until it is served."""
    run_kubectl(
        testenv,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/csvingestions.csvkafka.io",
    )


@pytest.fixture(scope="session")
def operator_kubeconfig(
    testenv: TestEnv, crd_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount, to check what it may do."""
    token = run_kubectl(
        testenv, "-n", OPERATOR_NS, "create", "token", OPERATOR_SA, "--duration=4h"
    ).stdout.strip()
    admin = yaml.safe_load(testenv.kubeconfig.read_text())
    ctx_name = admin["current-context"]
    ctx = next(c["context"] for c in admin["contexts"] if c["name"] == ctx_name)
    cluster = dict(next(c["cluster"] for c in admin["clusters"] if c["name"] == ctx["cluster"]))
    ca = cluster.pop("certificate-authority", None)
    if ca:
        ca_path = Path(ca) if Path(ca).is_absolute() else testenv.kubeconfig.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": OPERATOR_SA}}],
        "current-context": "operator",
    }
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class OperatorDeployment:
    """The operator's Deployment as a user installs it: its replicas (the manifest's count),
    of which the Lease's holder runs the handlers and the others stand by."""

    testenv: TestEnv
    logs: list[str] = field(default_factory=list)

    def _kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.testenv, "-n", OPERATOR_NS, *args, check=check)

    @staticmethod
    def replicas() -> int:
        """The manifest's replica count, which :meth:`start` restores."""
        docs = yaml.safe_load_all((ROOT / "manifests" / "deployment.yaml").read_text())
        deploy = next(d for d in docs if d and d["kind"] == "Deployment")
        return int(deploy["spec"]["replicas"])

    def lease(self) -> dict[str, Any] | None:
        """The operator's Lease, None if there is none yet."""
        proc = self._kubectl("get", "lease", OPERATOR_LEASE, "-o", "json", check=False)
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else None

    def holder(self) -> str:
        """The pod that holds the Lease ("" when free or absent)."""
        return str(((self.lease() or {}).get("spec") or {}).get("holderIdentity") or "")

    def pods(self) -> list[dict[str, Any]]:
        """The operator's running, ready pods that are not being deleted."""
        out = self._kubectl("get", "pods", "-l", OPERATOR_SELECTOR, "-o", "json").stdout
        pods: list[dict[str, Any]] = []
        for pod in json.loads(out)["items"]:
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod.get("status", {}).get("conditions", [])
            )
            if ready and not pod["metadata"].get("deletionTimestamp"):
                pods.append(dict(pod))
        return pods

    def pod(self) -> dict[str, Any] | None:
        """The active operator: the ready pod that holds the Lease, if any (a standby is ready
        too, but runs no handler and exports no ingestion)."""
        pods = self.pods()
        lease = self.lease()
        if lease is None:  # an operator without leader election: its one pod
            return pods[0] if pods else None
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return next((p for p in pods if p["metadata"]["name"] == holder), None)

    def start(self) -> None:
        """Scales the Deployment to the manifest's replicas and waits until one leads."""
        self._kubectl("scale", f"deploy/{OPERATOR_DEPLOY}", f"--replicas={self.replicas()}")
        self._kubectl("rollout", "status", f"deploy/{OPERATOR_DEPLOY}", "--timeout=180s")
        # A Lease left by a killed holder is taken over once it expires (15 s).
        deadline = time.monotonic() + 120
        while self.pod() is None:
            if time.monotonic() > deadline:
                raise AssertionError("no operator pod became ready holding the Lease")
            time.sleep(0.2)

    def stop(self, kill: bool = False) -> None:
        """Takes the operator away until :meth:`start`: scaled to zero, after a SIGKILL of the
        active pod's process when ``kill`` (no graceful shutdown, as a crashed container or
        node)."""
        self.logs.append(self.log_text())
        pod = self.pod()
        if kill and pod is not None:
            kill_container(OPERATOR_NS, pod["metadata"]["name"], "operator")
        self._kubectl("scale", f"deploy/{OPERATOR_DEPLOY}", "--replicas=0")
        self._kubectl(
            "wait", "--for=delete", "pod", "-l", OPERATOR_SELECTOR, "--timeout=120s", check=False
        )

    def metrics(self) -> str:
        pod = self.pod()
        assert pod is not None, "the operator is not running"
        url = f"http://{pod['status']['podIP']}:9090/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def rss_mib(self) -> float:
        found = re.search(r"^process_resident_memory_bytes (\S+)$", self.metrics(), re.M)
        assert found, "no process_resident_memory_bytes"
        return float(found.group(1)) / 2**20

    def log_text(self) -> str:
        """The operator's log: every replica's, and the pods' before each stop."""
        now = self._kubectl(
            "logs", "-l", OPERATOR_SELECTOR, "--all-containers", "--tail=-1",
            "--max-log-requests=10", check=False
        ).stdout
        return "\n".join([*self.logs, now])


@pytest.fixture(scope="session")
def operator_deployment(testenv: TestEnv, crd_installed: None) -> OperatorDeployment:
    return OperatorDeployment(testenv)


@pytest.fixture
def operator(
    operator_deployment: OperatorDeployment, request: pytest.FixtureRequest
) -> Iterator[OperatorDeployment]:
    operator_deployment.logs.clear()
    if operator_deployment.pod() is None:
        operator_deployment.start()
    yield operator_deployment
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- operator log ---\n{operator_deployment.log_text()[-6000:]}")
    if operator_deployment.pod() is None:
        operator_deployment.start()  # never leave the next test without its operator


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Lets fixtures see whether the test failed (to print the operator's log).
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


# --- helpers -----------------------------------------------------------------------------------


def write_csv(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        f.write("id,name,amount\n")
        for i in range(rows):
            f.write(f"{i},name-{i},{i % 1000}.5\n")
    return path


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
