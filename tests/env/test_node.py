"""The product as users run it: a real node (kubelet, containerd, runc), the image built from
this tree, the operator as its Deployment, workers in containers, and the environment's network
rule (every address is loopback or inside a namespace the environment made)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, TestEnv, run_kubectl
from tests.node import DataVolume, crictl
from tests.operator.conftest import OPERATOR_NS, OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import Ingestions, ingestion

# The environment's own networks (hack/node.sh): the veth pair, the pods, the Services.
INSIDE = [ipaddress.ip_network(n) for n in ("10.201.0.0/24", "10.202.0.0/24", "10.203.0.0/24")]


def test_one_ready_node_with_kubelet_and_containerd(testenv: TestEnv) -> None:
    out = run_kubectl(testenv, "get", "nodes", "-o", "wide").stdout
    print(out)
    nodes = json.loads(run_kubectl(testenv, "get", "nodes", "-o", "json").stdout)["items"]
    (node,) = nodes
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    info = node["status"]["nodeInfo"]
    assert ready == "True"
    assert re.fullmatch(r"v1\.37\.\d+", info["kubeletVersion"]), info
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    assert "containerd://" in out and " Ready " in out


def test_image_tag_is_the_hash_of_this_tree(testenv: TestEnv) -> None:
    """A test can never run yesterday's image: the tag is a hash of the sources in the image."""
    tag = subprocess.run(
        ["bash", str(ROOT / "hack" / "image-tag.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert testenv.image.endswith(f":{tag}"), (testenv.image, tag)
    images = crictl("images", "-o", "json")
    assert testenv.image in images


def test_operator_deployment_runs_the_built_image_hardened(
    operator: OperatorDeployment, testenv: TestEnv
) -> None:
    dep = json.loads(run_kubectl(
        testenv, "-n", OPERATOR_NS, "get", "deploy/csvkafka-operator", "-o", "json").stdout)
    available = {c["type"]: c["status"] for c in dep["status"]["conditions"]}["Available"]
    assert available == "True"
    pod = operator.pod()
    assert pod is not None
    (container,) = pod["spec"]["containers"]
    assert container["image"] == testenv.image
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["imageID"], status
    name = pod["metadata"]["name"]

    def exec_(*cmd: str) -> subprocess.CompletedProcess[str]:
        return run_kubectl(testenv, "-n", OPERATOR_NS, "exec", name, "--", *cmd, check=False)

    assert exec_("id", "-u").stdout.strip() == "10001"
    denied = exec_("touch", "/usr/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    assert exec_("touch", "/tmp/x").returncode == 0  # its emptyDir
    # The namespace enforces `restricted`, and the pod was admitted there.
    ns = json.loads(run_kubectl(testenv, "get", "ns", OPERATOR_NS, "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # JSON lines, as the worker's (`kubectl logs`).
    lines = [line for line in operator.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_worker_runs_in_a_container_of_the_tree_image_with_json_logs(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
    new_topic: Callable[..., str],
) -> None:
    csv = write_csv(data.path / "small.csv", 2000)
    t0 = time.monotonic()
    ingestions.create(ingestion("logs", data.source(csv), new_topic(partitions=1),
                                testenv.kafka_bootstrap))
    st = ingestions.wait_phase("logs", "Completed", timeout=180)
    assert st["rowsPublished"] == 2000
    pod = ingestions.worker_pods("logs-1")[0]
    assert pod.spec.containers[0].image == testenv.image
    assert pod.status.container_statuses[0].image_id
    logs = run_kubectl(testenv, "-n", ingestions.ns, "logs", "job/logs-1").stdout
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records, logs
    assert any("Started processing file" in r.get("message", "") for r in records), logs
    print(f"apply -> Completed for 2000 rows: {time.monotonic() - t0:.1f} s")


def test_oom_killed_worker_fails_naming_the_limit(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
    new_topic: Callable[..., str],
) -> None:
    """The Job sees exit 137 either way; the operator reads the pod's termination reason."""
    csv = write_csv(data.path / "rows.csv", 50_000)
    ingestions.create(ingestion(
        "oom", data.source(csv), new_topic(partitions=1), testenv.kafka_bootstrap,
        worker={"parallelism": 1, "backoffLimit": 3,
                "resources": {"requests": {"memory": "40Mi"}, "limits": {"memory": "40Mi"}}},
    ))
    st = ingestions.wait_phase("oom", "Failed", timeout=240)
    print(st["message"])
    assert "OOMKilled" in st["message"] or "out of memory" in st["message"], st["message"]
    assert "40Mi" in st["message"] and "spec.worker.resources.limits.memory" in st["message"]
    # Its retries would hit the same limit: the operator stops the Job instead.
    wait_for("the Job to go", lambda: ingestions.jobs() == [], timeout=60)
    assert any("JobStopped" in e for e in ingestions.events("oom")), ingestions.events("oom")


# --- the network rule ------------------------------------------------------------------------


def _ss(netns: str) -> list[list[str]]:
    """Listening and established TCP/UDP sockets of one of the environment's namespaces."""
    cmd = ["nsenter", f"--net=/run/netns/{netns}",
           "ss", "-Htuna", "state", "listening", "state", "established"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def _addr(endpoint: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, str]:
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]").split("%")[0]
    if host in ("*", "0.0.0.0", "::"):
        return None, port  # a wildcard: every address of that namespace
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip, port


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    return ip is None or ip.is_loopback or any(ip in net for net in INSIDE)


def _route_unreachable(netns: str) -> str:
    """`ip route get` of an outside address, which looks the route up and sends nothing."""
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "ip", "route", "get", "1.1.1.1"],
                          capture_output=True, text=True)
    assert proc.returncode != 0, f"{netns} has a route out: {proc.stdout}"
    return proc.stderr.strip()


def test_every_address_is_loopback_or_inside_the_environment(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
    new_topic: Callable[..., str],
) -> None:
    csv = write_csv(data.path / "big.csv", 600_000)
    ingestions.create(ingestion("net", data.source(csv), new_topic(partitions=3),
                                testenv.kafka_bootstrap,
                                checkpoint={"everyRows": 10_000, "everySeconds": 1}))
    wait_for("a checkpoint", lambda: (ingestions.status("net").get("checkpoint") or {}).get("row"),
             timeout=120, interval=0.05)
    node_ns = testenv.environ["CSVKAFKA_NODE_NETNS"]
    pod_nss = sorted(p.name for p in Path("/run/netns").glob("cni-*"))
    assert pod_nss, "no pod network namespace"
    seen: dict[str, list[list[str]]] = {"node": _ss(node_ns)}
    seen.update({ns: _ss(ns) for ns in pod_nss})
    bad: list[str] = []
    for where, sockets in seen.items():
        listening = {_addr(s[4])[1] for s in sockets if s[1] in ("LISTEN", "UNCONN")}
        for s in sockets:
            local, _ = _addr(s[4])
            if not _allowed(local):
                bad.append(f"{where}: local {s}")
            if s[1] == "ESTAB" and _addr(s[4])[1] not in listening:
                peer, _ = _addr(s[5])  # a connection this namespace made: to where?
                if not _allowed(peer):
                    bad.append(f"{where}: connects to {s}")
    # The host: nothing of the environment listens there (it all lives in the node), and the
    # connections the environment's processes make go inside.
    ours = _environment_pids(testenv)
    host_p = subprocess.run(["ss", "-Htunap", "state", "listening", "state", "established"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for line in host_p:
        if not any(f"pid={pid}," in line for pid in ours):
            continue
        fields = line.split()
        if fields[1] in ("LISTEN", "UNCONN"):
            bad.append(f"host: the environment listens on the host: {line}")
        elif not _allowed(_addr(fields[5])[0]):
            bad.append(f"host: connects outside: {line}")
    print(f"sockets checked: node {len(seen['node'])}, pods {sum(len(seen[n]) for n in pod_nss)}"
          f" in {len(pod_nss)} pods, host {len(host_p)}")
    assert not bad, "\n".join(bad)
    assert "unreachable" in _route_unreachable(node_ns).lower()
    assert "unreachable" in _route_unreachable(pod_nss[0]).lower()
    ingestions.wait_phase("net", "Completed", timeout=300)


def _environment_pids(testenv: TestEnv) -> set[int]:
    """The environment's processes on the host, their descendants, and this test process."""
    roots = {int(p.read_text()) for p in (testenv.state_dir / "run").glob("*.pid")}
    roots.add(os.getpid())
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out
