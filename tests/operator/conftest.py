"""Fixtures for the operator's integration tests: the CRD and the operator's RBAC from
``manifests/`` applied for real, and the operator itself as a subprocess watching one test
namespace with the token of the manifests' ServiceAccount (so least privilege is exercised)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, TestEnv, run_kubectl

OPERATOR_NS = "csvkafka-system"
OPERATOR_SA = "csvkafka-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def crd_installed(testenv: TestEnv) -> None:
    run_kubectl(
        testenv,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "crds" / "csvingestion.yaml"),
    )
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
    """Applies manifests/ without the Deployment (the pod runner would run it cluster-wide)
    and returns a kubeconfig holding a token of the operator's ServiceAccount."""
    built = run_kubectl(testenv, "kustomize", str(ROOT / "manifests")).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    keep = [d for d in docs if d["kind"] not in ("Deployment", "Service")]
    run_kubectl(
        testenv,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(keep),
    )
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
class OperatorProcess:
    """``python -m ingest_operator`` watching one namespace, as its Deployment would run it."""

    namespace: str
    kubeconfig: Path
    log_path: Path
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CSVKAFKA_WATCH_NAMESPACES": self.namespace,
            "CSVKAFKA_WORKER_IMAGE": "csv-kafka:test",
            "CSVKAFKA_HEALTH_PORT": str(self.health_port),
            "CSVKAFKA_METRICS_PORT": str(self.metrics_port),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ingest_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited: {self.log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("operator did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            text: str = resp.read().decode()
            return text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator(
    namespace: str, operator_kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(namespace, operator_kubeconfig, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- operator log ---\n{op.log_text()[-6000:]}")


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
