"""The operator against the real control plane and the real broker (see conftest.py).

No mocks: a real kube-apiserver validates the CRD, the operator runs as its Deployment, the real
Job controller retries pods, the kubelet runs each worker in a container of the image built from
this tree with its ServiceAccount's token, and rows land in a real Kafka topic.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import TestEnv
from tests.node import DataVolume, kill_container, pod_logs
from tests.operator.conftest import OperatorDeployment, run_kubectl, wait_for, write_csv

GROUP, VERSION, PLURAL = "csvkafka.io", "v1alpha1", "csvingestions"


def ingestion(
    name: str, source: dict[str, Any] | str, topic: str, bootstrap: str, **spec: Any
) -> dict[str, Any]:
    """A CsvIngestion; ``source`` is a ``spec.source`` (``DataVolume.source``) or a bare URL."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CsvIngestion",
        "metadata": {"name": name},
        "spec": {
            "source": {"url": source} if isinstance(source, str) else source,
            "kafka": {"bootstrapServers": bootstrap, "topic": topic},
            "worker": {"parallelism": 1, "backoffLimit": 3},
            **spec,
        },
    }
    return body


class Ingestions:
    """CsvIngestions of one namespace, through the admin client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body
        )
        return out

    def get(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return out

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def jobs(self) -> list[str]:
        return sorted(j.metadata.name for j in self.batch.list_namespaced_job(self.ns).items)

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        st: dict[str, Any] = wait_for(
            f"{name} to be {phase}",
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout=timeout,
        )
        return st

    def events(self, name: str) -> list[str]:
        evs = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}"
        ).items
        return [f"{e.reason}: {e.message}" for e in evs]

    def worker_pods(self, job: str) -> list[client.V1Pod]:
        pods: list[client.V1Pod] = self.core.list_namespaced_pod(
            self.ns, label_selector=f"job-name={job}"
        ).items
        return pods


@pytest.fixture
def ingestions(kube_api: client.ApiClient, namespace: str) -> Ingestions:
    return Ingestions(kube_api, namespace)


def distinct_ids(messages: list[Any]) -> set[int]:
    return {int(json.loads(m.value())["id"]) for m in messages}


def record_figure(name: str, value: str) -> None:
    """Figures for the report (apply→Job latency, RSS), collected in .testenv/figures.txt."""
    path = Path(os.environ.get("CSVKAFKA_TESTENV", ".testenv")) / "operator-figures.txt"
    with path.open("a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {name}: {value}\n")


# --- the happy path ----------------------------------------------------------------------------


def test_apply_to_completed_with_every_row(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    rows = 20_000
    csv = write_csv(data.path / "data.csv", rows)
    topic = new_topic(partitions=3)
    t0 = time.monotonic()
    ingestions.create(ingestion("orders", data.source(csv), topic, testenv.kafka_bootstrap))
    wait_for("the worker Job", lambda: ingestions.jobs() == ["orders-1"], timeout=30, interval=0.02)
    created = time.monotonic() - t0
    phases: list[str] = []

    def completed() -> bool:
        phase = ingestions.status("orders").get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        return phase in ("Completed", "Failed")

    wait_for("the end of the ingestion", completed, timeout=180, interval=0.05)
    st = ingestions.status("orders")
    assert st["phase"] == "Completed", json.dumps(st, indent=1)
    assert phases[-1] == "Completed" and "Failed" not in phases
    assert st["rowsPublished"] == rows and st["rowsFailed"] == 0
    assert st["checkpoint"]["row"] == rows and st["progress"] == "100%"
    assert st["attempts"] == 1 and st["run"] == 1 and st["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "True",
        "Progressing": "False",
        "Failed": "False",
    }
    messages = consume_all(topic, rows)
    assert distinct_ids(messages) == set(range(rows))
    # What `kubectl get` shows.
    row = wide_row(run_kubectl(testenv, "-n", namespace, "get", "csvi", "orders").stdout)
    assert list(row)[:6] == ["NAME", "PHASE", "PROGRESS", "UNITS", "ROWS", "ERRORS"]
    # One file has no units: the UNITS column is empty (a prefix shows "Files 812/5000").
    assert list(row.values())[:6] == ["orders", "Completed", "100%", "", str(rows), "0"]
    reasons = " | ".join(ingestions.events("orders"))
    assert "RunStarted" in reasons and "Completed" in reasons
    # Nothing the operator writes is in spec or outside its own prefix (Argo CD sees no drift).
    meta = ingestions.get("orders")["metadata"]
    owned = list(meta.get("annotations") or {}) + (meta.get("finalizers") or [])
    assert all(k.startswith("csvkafka.io/") for k in owned), owned
    # The Deployment watches every namespace: this ingestion is one of those it counts.
    completed = re.search(r'^csvkafka_operator_ingestions\{phase="Completed"\} (\S+)$',
                          operator.metrics(), re.M)
    assert completed and float(completed.group(1)) >= 1
    record_figure("apply -> Job created (s)", f"{created:.3f}")
    record_figure("operator RSS after one ingestion (MiB)", f"{operator.rss_mib():.1f}")
    record_figure("phases seen", " -> ".join(phases))


# --- validation by the API server --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kafka": {"bootstrapServers": "k:9092"}}, "spec.kafka.topic"),
        ({"checkpoint": {"everySeconds": -5}}, "spec.checkpoint.everySeconds"),
        ({"sourceTypo": {"url": "x"}}, "sourceTypo"),
        ({"kafka": {"bootstrapServers": "k:9092", "topic": "bad topic!"}}, "spec.kafka.topic"),
    ],
    ids=["missing-topic", "negative-interval", "unknown-field", "bad-topic-name"],
)
def test_bad_specs_are_refused_naming_the_field(
    crd_installed: None, testenv: TestEnv, namespace: str, change: dict[str, Any], field: str
) -> None:
    body = ingestion("bad", "file:///x.csv", "t", "k:9092")
    body["spec"].update(change)
    proc = run_kubectl(
        testenv, "-n", namespace, "apply", "-f", "-", input=json.dumps(body), check=False
    )
    assert proc.returncode != 0, proc.stdout
    assert field in proc.stderr, proc.stderr


# --- failure, retry by edit --------------------------------------------------------------------


def test_missing_source_fails_then_edit_retries(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    missing = data.source(data.path / "nowhere.csv")
    topic = new_topic(partitions=1)
    ingestions.create(ingestion("fix", missing, topic, testenv.kafka_bootstrap))
    st = ingestions.wait_phase("fix", "Failed", timeout=120)
    assert missing["url"] in st["message"], st["message"]
    assert st["attempts"] == 1  # a fatal error is not retried by the Job controller
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"

    csv = write_csv(data.path / "there.csv", 1000)
    ingestions.patch_spec("fix", {"source": data.source(csv)})
    st = ingestions.wait_phase("fix", "Completed", timeout=120)
    assert st["run"] == 2 and st["rowsPublished"] == 1000 and st["observedGeneration"] == 2
    assert ingestions.jobs() == ["fix-1", "fix-2"]
    assert distinct_ids(consume_all(topic, 1000)) == set(range(1000))


# --- crashes and restarts ----------------------------------------------------------------------


def start_offsets(api: client.ApiClient, namespace: str, job: str) -> list[int]:
    """The byte offset each pod of a Job started reading at (in start order), from the
    workers' JSON logs as `kubectl logs` shows them."""
    starts = []
    for line in pod_logs(api, namespace, f"job-name={job}").splitlines():
        if '"Started processing file' in line:
            rec = json.loads(line)
            starts.append((rec["time"], int(rec["byte_offset"])))
    return [offset for _, offset in sorted(starts)]


def running_worker(ingestions: Ingestions, job: str) -> str | None:
    """The name of the Job's pod whose worker container runs, if any."""
    for pod in ingestions.worker_pods(job):
        for cs in (pod.status and pod.status.container_statuses) or []:
            if cs.state and cs.state.running and cs.container_id:
                return str(pod.metadata.name)
    return None


BIG_ROWS = 600_000


def test_killed_worker_resumes_from_checkpoint(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", BIG_ROWS)
    topic = new_topic(partitions=3)
    ingestions.create(
        ingestion(
            "crash",
            data.source(csv),
            topic,
            testenv.kafka_bootstrap,
            checkpoint={"everyRows": 10_000, "everySeconds": 1},
        )
    )
    row = wait_for(
        "a first checkpoint",
        lambda: (ingestions.status("crash").get("checkpoint") or {}).get("row"),
        timeout=120,
        interval=0.05,
    )
    # Progress shows while it runs (the PROGRESS column of kubectl get).
    st = ingestions.status("crash")
    assert re.fullmatch(r"\d{1,2}%", st.get("progress") or ""), st
    pod = wait_for("the worker's pod", lambda: running_worker(ingestions, "crash-1"), timeout=30)
    assert kill_container(ingestions.ns, pod, "worker"), "the worker was not running"
    assert row < BIG_ROWS, "the file was done before the kill: make it bigger"
    st = ingestions.wait_phase("crash", "Completed", timeout=300)
    assert st["attempts"] == 2 and st["run"] == 1, json.dumps(st, indent=1)
    assert len(ingestions.worker_pods("crash-1")) == 2
    assert st["checkpoint"]["row"] == BIG_ROWS and st["rowsPublished"] == BIG_ROWS
    # The second pod started from the checkpoint, not from the top of the file.
    first, second = start_offsets(ingestions.core.api_client, ingestions.ns, "crash-1")
    assert second > first
    assert distinct_ids(consume_all(topic, BIG_ROWS, timeout=120)) == set(range(BIG_ROWS))
    record_figure("checkpoint row when killed", str(row))


def test_operator_restart_mid_ingestion(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", BIG_ROWS)
    topic = new_topic(partitions=3)
    ingestions.create(ingestion("restart", data.source(csv), topic, testenv.kafka_bootstrap))
    ingestions.wait_phase("restart", "InProgress", timeout=60)
    operator.stop(kill=True)  # no graceful shutdown
    time.sleep(1)
    operator.start()
    st = ingestions.wait_phase("restart", "Completed", timeout=300)
    assert ingestions.jobs() == ["restart-1"]
    assert st["run"] == 1 and st["rowsPublished"] == BIG_ROWS
    assert distinct_ids(consume_all(topic, BIG_ROWS, timeout=120)) == set(range(BIG_ROWS))


def test_suspend_and_resume(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", BIG_ROWS)
    topic = new_topic(partitions=3)
    ingestions.create(
        ingestion(
            "pause",
            data.source(csv),
            topic,
            testenv.kafka_bootstrap,
            checkpoint={"everyRows": 10_000, "everySeconds": 1},
        )
    )
    wait_for(
        "a first checkpoint",
        lambda: (ingestions.status("pause").get("checkpoint") or {}).get("row"),
        timeout=120,
        interval=0.05,
    )
    ingestions.patch_spec("pause", {"suspend": True})
    wait_for("the Job to go", lambda: ingestions.jobs() == [], timeout=60)
    st = ingestions.status("pause")
    assert st["phase"] == "Pending" and "Suspended" in st["message"], st
    held = st["checkpoint"]["row"]
    assert held > 0
    ingestions.patch_spec("pause", {"suspend": False})
    st = ingestions.wait_phase("pause", "Completed", timeout=300)
    assert st["run"] == 2 and st["rowsPublished"] == BIG_ROWS
    assert ingestions.jobs() == ["pause-2"]
    (resumed_at,) = start_offsets(ingestions.core.api_client, ingestions.ns, "pause-2")
    assert resumed_at >= held * len("0,name-0,0.5\n")  # resumed, not restarted
    assert distinct_ids(consume_all(topic, BIG_ROWS, timeout=120)) == set(range(BIG_ROWS))


def test_edit_while_running_is_reported(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", BIG_ROWS)
    topic = new_topic(partitions=3)
    ingestions.create(ingestion("edit", data.source(csv), topic, testenv.kafka_bootstrap))
    ingestions.wait_phase("edit", "InProgress", timeout=60)
    ingestions.patch_spec("edit", {"retry": 1})
    wait_for(
        "a SpecChangePending event",
        lambda: any("SpecChangePending" in e for e in ingestions.events("edit")),
        timeout=30,
    )
    st = ingestions.status("edit")
    assert st["phase"] == "Completed" or "applies to the next run" in st["message"], st
    st = ingestions.wait_phase("edit", "Completed", timeout=300)
    assert st["observedGeneration"] == 1 and ingestions.jobs() == ["edit-1"]


def test_delete_removes_the_job(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", BIG_ROWS)
    ingestions.create(
        ingestion("gone", data.source(csv), new_topic(partitions=1), testenv.kafka_bootstrap)
    )
    wait_for("the Job", lambda: ingestions.jobs() == ["gone-1"], timeout=30)
    ingestions.delete("gone")
    wait_for("the Job to be collected", lambda: ingestions.jobs() == [], timeout=60)
    wait_for(
        "the worker pods to go",
        lambda: not ingestions.worker_pods("gone-1"),
        timeout=60,
    )


# --- RBAC --------------------------------------------------------------------------------------


def test_worker_may_patch_only_its_own_status(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    data: DataVolume,
) -> None:
    missing = "file:///nowhere/none.csv"
    ingestions.create(ingestion("mine", missing, "t", testenv.kafka_bootstrap))
    ingestions.create(ingestion("other", missing, "t", testenv.kafka_bootstrap))
    wait_for("the worker's RoleBinding", lambda: _can_i(testenv, namespace, "get", "mine"))
    as_worker = f"system:serviceaccount:{namespace}:mine-worker"

    def can(verb: str, name: str, sub: str | None = "status") -> bool:
        args = ["-n", namespace, "auth", "can-i", verb, f"{PLURAL}.{GROUP}/{name}"]
        if sub:
            args += ["--subresource", sub]
        proc = run_kubectl(testenv, *args, "--as", as_worker, check=False)
        return proc.stdout.strip() == "yes"

    assert can("patch", "mine") and can("get", "mine", None)
    assert not can("patch", "other") and not can("get", "other", None)
    assert not can("patch", "mine", None)  # not its spec
    assert not can("delete", "mine", None)
    # And a real patch with the worker's own token.
    token = run_kubectl(
        testenv, "-n", namespace, "create", "token", "mine-worker", "--duration=10m"
    ).stdout.strip()
    admin_cfg = ingestions.custom.api_client.configuration
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = admin_cfg.host, admin_cfg.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    worker_api = client.CustomObjectsApi(client.ApiClient(cfg))
    worker_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "mine", {"status": {"lastError": "from the worker"}}
    )
    with pytest.raises(ApiException) as refused:
        worker_api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "other", {"status": {"lastError": "nope"}}
        )
    assert refused.value.status == 403


def _can_i(testenv: TestEnv, namespace: str, verb: str, name: str) -> bool:
    proc = run_kubectl(
        testenv,
        "-n",
        namespace,
        "auth",
        "can-i",
        verb,
        f"{PLURAL}.{GROUP}/{name}",
        "--as",
        f"system:serviceaccount:{namespace}:{name}-worker",
        check=False,
    )
    return proc.stdout.strip() == "yes"


# --- manifests ---------------------------------------------------------------------------------


def test_manifests_apply_server_side_dry_run(operator_kubeconfig: Path, testenv: TestEnv) -> None:
    proc = run_kubectl(testenv, "apply", "-k", "manifests/", "--dry-run=server")
    assert "deployment.apps/csvkafka-operator" in proc.stdout
    # The namespace warns on templates that would break Pod Security `restricted`.
    assert "PodSecurity" not in proc.stderr, proc.stderr


def test_job_that_finished_while_the_operator_was_down(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "small.csv", 5000)
    ingestions.create(
        ingestion("down", data.source(csv), new_topic(partitions=1), testenv.kafka_bootstrap)
    )
    wait_for("the Job", lambda: ingestions.jobs() == ["down-1"], timeout=30, interval=0.02)
    operator.stop()

    def job_complete() -> bool:
        job = ingestions.batch.read_namespaced_job("down-1", ingestions.ns)
        return any(
            c.type == "Complete" and c.status == "True" for c in (job.status.conditions or [])
        )

    wait_for("the Job to complete", job_complete, timeout=120)
    assert ingestions.status("down")["phase"] != "Completed"  # nobody watched it finish
    operator.start()
    st = ingestions.wait_phase("down", "Completed", timeout=60)
    assert st["rowsPublished"] == 5000 and ingestions.jobs() == ["down-1"]


def test_new_source_starts_from_zero(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    big = write_csv(data.path / "big.csv", BIG_ROWS)
    small = write_csv(data.path / "small.csv", 3000)
    ingestions.create(
        ingestion(
            "swap",
            data.source(big),
            new_topic(partitions=1),
            testenv.kafka_bootstrap,
            checkpoint={"everyRows": 10_000, "everySeconds": 1},
        )
    )
    wait_for(
        "a first checkpoint",
        lambda: (ingestions.status("swap").get("checkpoint") or {}).get("row"),
        timeout=120,
        interval=0.05,
    )
    ingestions.patch_spec("swap", {"suspend": True})
    wait_for("the Job to go", lambda: ingestions.jobs() == [], timeout=60)
    ingestions.patch_spec("swap", {"suspend": False, "source": data.source(small)})
    st = ingestions.wait_phase("swap", "Completed", timeout=120)
    assert st["run"] == 2 and st["sourceUrl"] == data.url(small)
    assert st["rowsRead"] == 3000 and st["checkpoint"]["row"] == 3000
    offsets = start_offsets(ingestions.core.api_client, ingestions.ns, "swap-2")
    assert offsets == [len("id,name,amount\n")]


def test_missing_topic_fails_naming_it(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
) -> None:
    """The broker has topic auto-creation off, as a user's cluster: the worker fails the
    ingestion at once (no pod retries), and status says which topic is missing."""
    csv = write_csv(data.path / "rows.csv", 100)
    topic = f"missing-{os.urandom(5).hex()}"
    ingestions.create(ingestion("notopic", data.source(csv), topic, testenv.kafka_bootstrap))
    st = ingestions.wait_phase("notopic", "Failed", timeout=120)
    assert f"topic {topic} does not exist" in st["message"], st["message"]
    assert "spec.kafka.createTopics" in st["message"]
    assert st["attempts"] == 1 and st.get("rowsPublished", 0) == 0


# --- day-2 controls: rate and ETA, restart, history --------------------------------------------


def wide_row(out: str) -> dict[str, str]:
    """The first row of `kubectl get -o wide`, by column, an absent value as "": cut at the
    header's column starts (the MESSAGE cell has blanks)."""
    header, line = out.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    cells = {h: line[s:e].strip() for h, s, e in zip(header.split(), starts, ends, strict=True)}
    return {h: "" if cell == "<none>" else cell for h, cell in cells.items()}


def test_wide_output_shows_the_rate_and_the_eta_during_a_run(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "big.csv", 1_500_000)
    # A quarter of a core: the run lasts long enough (~15 s) for a few checkpoints a second apart.
    cpu = {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}
    body = ingestion(
        "wide",
        data.source(csv),
        new_topic(partitions=3),
        testenv.kafka_bootstrap,
        checkpoint={"everySeconds": 1},
    )
    body["spec"]["worker"]["resources"] = cpu
    ingestions.create(body)

    def rate_and_eta() -> dict[str, str] | None:
        out = run_kubectl(testenv, "-n", namespace, "get", "csvingestions", "-o", "wide").stdout
        row = wide_row(out)
        assert row["PHASE"] != "Completed", f"the run ended before a rate showed: {out}"
        return row if row["RATE"] and row["ETA"] else None

    row = wait_for("a rate and an ETA in -o wide", rate_and_eta, timeout=180, interval=0.2)
    assert row["NAME"] == "wide" and row["PHASE"] == "InProgress", row
    assert float(row["RATE"]) > 0, row
    assert re.fullmatch(r"(\d+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)", row["ETA"]), row
    record_figure("-o wide during a run", f"RATE {row['RATE']} ETA {row['ETA']}")
    st = ingestions.wait_phase("wide", "Completed", timeout=300)
    # Gone when the run ends; the attempt's end is in the history.
    assert "rowsPerSecond" not in st and "eta" not in st, json.dumps(st, indent=1)
    (record,) = st["history"]
    assert (record["attempt"], record["run"], record["outcome"]) == (1, 1, "Completed")
    assert "1500000" in record["message"], record
    row = wide_row(run_kubectl(testenv, "-n", namespace, "get", "csvi", "-o", "wide").stdout)
    assert (row["PHASE"], row["RATE"], row["ETA"]) == ("Completed", "", ""), row


def test_raising_restart_ingests_a_completed_file_again_from_the_beginning(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    kubectl: Callable[..., Any],
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "again.csv", rows := 3000)
    topic = new_topic(partitions=1)
    ingestions.create(ingestion("again", data.source(csv), topic, testenv.kafka_bootstrap))
    st = ingestions.wait_phase("again", "Completed", timeout=180)
    assert st["run"] == 1 and st["rowsPublished"] == rows
    patch = '{"spec":{"restart":1}}'
    kubectl("-n", ingestions.ns, "patch", "csvi", "again", "--type", "merge", "-p", patch)
    st = wait_for(
        "run 2 to complete",
        lambda: (s := ingestions.status("again")).get("run") == 2
        and s.get("phase") == "Completed"
        and s,
        timeout=180,
    )
    assert st["observedRestart"] == 1 and ingestions.jobs() == ["again-1", "again-2"]
    # The counters and the checkpoint are this run's alone, from the first row.
    assert st["rowsPublished"] == rows and st["checkpoint"]["row"] == rows, st
    assert start_offsets(ingestions.core.api_client, ingestions.ns, "again-2") == [
        len("id,name,amount\n")
    ]
    # Every row published a second time: the topic holds each id twice.
    messages = consume_all(topic, 2 * rows)
    counts = Counter(int(json.loads(m.value())["id"]) for m in messages)
    assert len(messages) == 2 * rows and set(counts) == set(range(rows))
    assert set(counts.values()) == {2}
    assert [(h["run"], h["outcome"]) for h in st["history"]] == [(2, "Completed"), (1, "Completed")]
    assert any("RunStarted" in e and "from the beginning" in e for e in ingestions.events("again"))
    # Once per raise: the same value starts nothing more.
    time.sleep(3)
    assert ingestions.jobs() == ["again-1", "again-2"]
    assert ingestions.status("again")["run"] == 2
