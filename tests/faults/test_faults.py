"""Jepsen-style fault injection against the real components: the operator (its Deployment), the
real kube-apiserver and Job controller, worker pods in containers on the real node, the real
broker. Faults use real means: a SIGKILL to a container's process, the broker or the API server
stopped.

Every scenario: a seeded random schedule (the seed is printed, and can be forced with
``CSVKAFKA_FAULT_SEED``), a watcher that samples the resource's status all along (the phase
never goes backwards within a run, the checkpoint never moves backwards), and at the end the
independent verifier: nothing lost, nothing foreign, duplicates at most the checkpoint interval
times the interruptions. Each scenario appends its row to ``.testenv/fault-report.txt``.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ingest_worker.verify import CsvFormat, GoodRow, VerifyReport, consume, parse_source, verify
from tests.conftest import ROOT, SCENARIO_START, ComponentControl, TestEnv
from tests.node import DataVolume, kill_container
from tests.operator.conftest import OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import Ingestions, ingestion, running_worker

EVERY_ROWS = 10_000
ROWS = 400_000
PHASE_RANK = {None: 0, "Pending": 0, "InProgress": 1, "Completed": 2, "Failed": 2}


def seed_for(name: str) -> int:
    seed = int(os.environ.get("CSVKAFKA_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"[{name}] seed {seed} (rerun with CSVKAFKA_FAULT_SEED={seed})")
    return seed


@dataclass
class Watcher:
    """Samples status every 50 ms: phase transitions and checkpoint offsets, per run."""

    ingestions: Ingestions
    name: str
    samples: list[tuple[int, str | None, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                st = self.ingestions.status(self.name)
            except Exception:  # the API server may be down on purpose
                time.sleep(0.2)
                continue
            run = int(st.get("run") or 0)
            phase = st.get("phase")
            off = int((st.get("checkpoint") or {}).get("byteOffset", 0))
            if self.samples:
                prun, pphase, poff = self.samples[-1]
                if run == prun:
                    if PHASE_RANK[phase] < PHASE_RANK[pphase]:
                        self.errors.append(f"run {run}: phase went back {pphase} -> {phase}")
                    if off < poff:
                        self.errors.append(f"run {run}: checkpoint went back {poff} -> {off}")
                elif run < prun:
                    self.errors.append(f"run went back {prun} -> {run}")
            self.samples.append((run, phase, off))
            time.sleep(0.05)

    def phases(self) -> list[str]:
        out: list[str] = []
        for _, phase, _ in self.samples:
            if phase and (not out or out[-1] != phase):
                out.append(phase)
        return out

    def checkpoint(self) -> int:
        return self.samples[-1][2] if self.samples else 0


def report_row(
    scenario: str, seed: int, interruptions: int, report: VerifyReport, phase: str, extra: str = ""
) -> None:
    path = Path(os.environ.get("CSVKAFKA_TESTENV", ".testenv")) / "fault-report.txt"
    line = (
        f"{time.strftime('%F %T')} | {scenario} | seed {seed} | interruptions {interruptions} | "
        f"rows {report.rows_expected} | lost {report.lost} | foreign {report.rows_unexpected} | "
        f"duplicates {report.duplicates} | final {phase} | "
        f"time {time.monotonic() - SCENARIO_START[0]:.0f} s{' | ' + extra if extra else ''}"
    )
    with path.open("a") as f:
        f.write(line + "\n")
    print(line)


def check_outcome(
    report: VerifyReport, interruptions: int, watcher: Watcher, every_rows: int = EVERY_ROWS
) -> None:
    assert report.ok, report.summary()
    assert report.duplicates <= every_rows * max(1, interruptions), (
        f"{report.duplicates} duplicates > {every_rows} x {interruptions} interruptions"
    )
    assert not watcher.errors, watcher.errors


@pytest.fixture
def big_csv(data: DataVolume) -> Path:
    return write_csv(data.path / "big.csv", ROWS)


def _create(
    ingestions: Ingestions, name: str, csv: Path, topic: str, bootstrap: str, **spec: Any
) -> None:
    """An ingestion of ``csv``, a file of the test's data volume (the ``data`` fixture)."""
    body = ingestion(name, DataVolume(csv.parent).source(csv), topic, bootstrap,
                     checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 1}, **spec)
    ingestions.create(body)


def _verify(csv: Path, topic: str, bootstrap: str) -> VerifyReport:
    """The verifier, with the URL the worker saw the file at (event ids derive from it)."""
    return verify(str(csv), topic, bootstrap, source_url=DataVolume(csv.parent).url(csv),
                  timeout=120)


# --- 1. SIGKILL the worker ----------------------------------------------------------------------


def _kill_at_random_points(
    rng: random.Random, kills: int, namespace: str, running: Callable[[], str | None],
    progress: Callable[[], int], total: int,
) -> int:
    """SIGKILLs the worker container's process at ``kills`` random progress points; returns how
    many kills landed (the ingestion may finish first)."""
    points = sorted(rng.uniform(0.02, 0.9) * total for _ in range(kills))
    done = 0
    for point in points:
        deadline = time.monotonic() + 240
        while progress() < point and time.monotonic() < deadline:
            time.sleep(0.01)
        pod = wait_for("a running worker", running, timeout=240, interval=0.02)
        time.sleep(rng.uniform(0, 0.3))
        if kill_container(namespace, pod, "worker") is None:
            continue
        done += 1
        # The next attempt must start before the next kill (not the same pod twice).
        wait_for("the pod to go", lambda p=pod: running() != p, timeout=60, interval=0.02)
    return done


def test_sigkill_cli_worker_ten_times(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """Ten SIGKILLs of the worker (its whole process group) at random points, each followed by
    a restart from the file checkpoint, as a supervisor would; the last run finishes.

    The kill points are places in the file, not times: the whole file takes a few seconds, so
    kills on a clock would often find the run already done. Each run is killed a moment after
    its checkpoint passes a random row of the first 90%; a row the checkpoint is already past
    makes a kill during start-up, before any work."""
    seed = seed_for("sigkill-cli")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    cp = tmp_path / "cp.json"
    rows = 1_500_000
    big_csv = write_csv(tmp_path / "bigger.csv", rows)
    cmd = [sys.executable, "-m", "ingest_worker", "run", str(big_csv), "--topic", topic,
           "--bootstrap-servers", kafka_bootstrap, "--checkpoint", str(cp),
           "--checkpoint-rows", str(EVERY_ROWS), "--checkpoint-seconds", "1",
           "--parallelism", "2", "--log-level", "WARNING"]

    def checkpoint_row() -> int:
        if not cp.exists():
            return -1
        return int(json.loads(cp.read_text())["checkpoint"]["row"])

    targets = sorted(int(rng.uniform(0.0, 0.9) * rows) for _ in range(10))
    kills = 0
    last_row = -1
    for _attempt in range(40):
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 10:
            deadline = time.monotonic() + 120
            while (proc.poll() is None and checkpoint_row() < targets[kills]
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        rc = proc.wait(timeout=300)
        if cp.exists():
            row = checkpoint_row()
            assert row >= last_row, f"checkpoint went back {last_row} -> {row}"
            last_row = row
        if rc == 0:
            break
    else:
        raise AssertionError("the ingestion never completed")
    final = json.loads(cp.read_text())
    assert final["checkpoint"]["done"] and final["checkpoint"]["row"] == rows
    report = _verify_plain(big_csv, topic, kafka_bootstrap)
    report_row("1a. SIGKILL worker x10 (CLI, restarted from file checkpoint)", seed, kills,
               report, "exit 0")
    assert kills == 10
    assert report.ok, report.summary()
    assert report.duplicates <= EVERY_ROWS * kills, report.summary()


def _verify_plain(csv: Path, topic: str, bootstrap: str) -> VerifyReport:
    return verify(str(csv), topic, bootstrap, timeout=120)


@pytest.mark.slow
def test_sigkill_worker_pods_job_retries_finish(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    big_csv: Path,
    new_topic: Callable[..., str],
) -> None:
    """SIGKILL the worker container's process at random points; the Job's retries finish it.

    The Job controller delays each retry exponentially (10 s, 20 s, 40 s, ...), so ten kills in
    one Job would take over half an hour: the default is 3 here (CSVKAFKA_FAULT_POD_KILLS=10
    for the full run); the CLI scenario above does ten.
    """
    kills_wanted = int(os.environ.get("CSVKAFKA_FAULT_POD_KILLS", "3"))
    seed = seed_for("sigkill-pods")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "kill", big_csv, topic, testenv.kafka_bootstrap,
            worker={"parallelism": 1, "backoffLimit": kills_wanted + 5})
    size = big_csv.stat().st_size
    with Watcher(ingestions, "kill") as w:
        kills = _kill_at_random_points(
            rng, kills_wanted, ingestions.ns, lambda: running_worker(ingestions, "kill-1"),
            w.checkpoint, size)
        st = ingestions.wait_phase("kill", "Completed", timeout=900)
    report = _verify(big_csv, topic, testenv.kafka_bootstrap)
    report_row("1b. SIGKILL worker pod (Job retries)", seed, kills, report, st["phase"],
               f"attempts {st['attempts']}")
    check_outcome(report, kills, w)
    assert st["rowsPublished"] == ROWS
    assert ingestions.jobs() == ["kill-1"]
    # One pod per kill plus the one that finished. status.attempts counts the pods whose worker
    # got as far as its status store: a pod killed during its first second is not among them.
    pods = ingestions.core.list_namespaced_pod(ingestions.ns, label_selector="job-name=kill-1")
    pods = pods.items
    assert len(pods) == kills + 1
    assert 2 <= st["attempts"] <= kills + 1


# --- 2, 3. the broker goes away -----------------------------------------------------------------


def _wait_progress(ingestions: Ingestions, name: str, rng: random.Random, size: int) -> None:
    target = rng.uniform(0.1, 0.4) * size
    wait_for("progress", lambda: int((ingestions.status(name).get("checkpoint") or {})
                                     .get("byteOffset", 0)) >= target, timeout=180, interval=0.05)


@pytest.mark.slow
def test_broker_down_30s_mid_ingestion(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    big_csv: Path,
    new_topic: Callable[..., str],
    kafka_control: ComponentControl,
) -> None:
    seed = seed_for("broker-30s")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "kdown", big_csv, topic, testenv.kafka_bootstrap,
            kafka={"bootstrapServers": testenv.kafka_bootstrap, "topic": topic,
                   "retryBudgetSeconds": 120})
    with Watcher(ingestions, "kdown") as w:
        _wait_progress(ingestions, "kdown", rng, big_csv.stat().st_size)
        kafka_control.stop()
        time.sleep(30)
        kafka_control.start()
        st = ingestions.wait_phase("kdown", "Completed", timeout=400)
    report = _verify(big_csv, topic, testenv.kafka_bootstrap)
    report_row("2. broker down 30 s", seed, 1, report, st["phase"], f"attempts {st['attempts']}")
    check_outcome(report, 1, w)


@pytest.mark.slow
def test_broker_down_past_retry_budget_fails_then_retry_completes(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    big_csv: Path,
    new_topic: Callable[..., str],
    kafka_control: ComponentControl,
) -> None:
    seed = seed_for("broker-budget")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "kgone", big_csv, topic, testenv.kafka_bootstrap,
            kafka={"bootstrapServers": testenv.kafka_bootstrap, "topic": topic,
                   "retryBudgetSeconds": 10})
    with Watcher(ingestions, "kgone") as w:
        _wait_progress(ingestions, "kgone", rng, big_csv.stat().st_size)
        kafka_control.stop()
        try:
            failed = ingestions.wait_phase("kgone", "Failed", timeout=240)
        finally:
            kafka_control.start()
        # The checkpoint is at or behind the last acknowledged row: every row before it is in
        # the topic (what is after it may or may not be).
        cp_offset = int(failed["checkpoint"]["byteOffset"])
        partial = _verify(big_csv, topic, testenv.kafka_bootstrap)
        assert partial.rows_unexpected == 0 and partial.rows_mismatched == 0
        missing_before_cp = _missing_before(big_csv, topic, testenv.kafka_bootstrap, cp_offset)
        assert missing_before_cp == 0, f"{missing_before_cp} rows before the checkpoint lost"
        assert failed.get("message"), failed
        ingestions.patch_spec("kgone", {"retry": 1})
        st = ingestions.wait_phase("kgone", "Completed", timeout=400)
    report = _verify(big_csv, topic, testenv.kafka_bootstrap)
    report_row("3. broker down past the retry budget, then spec.retry", seed, 1, report,
               f"Failed -> {st['phase']}", f"checkpoint at failure {cp_offset}")
    check_outcome(report, 1, w)
    assert st["run"] == 2 and "Failed" in w.phases()


def _missing_before(csv: Path, topic: str, bootstrap: str, offset: int) -> int:
    """Good rows of the file starting before ``offset`` that are not in the topic."""
    seen = {int(json.loads(m.value())["_id"].rpartition("-")[2]) for m in consume(bootstrap, topic)}
    with csv.open("rb") as f:
        return sum(
            1
            for r in parse_source(f, CsvFormat(), f"file://{csv}")
            if isinstance(r, GoodRow) and r.offset < offset and r.offset not in seen
        )


# --- 4. the API server goes away ----------------------------------------------------------------


@pytest.mark.slow
def test_apiserver_down_20s_while_checkpointing(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    big_csv: Path,
    new_topic: Callable[..., str],
    apiserver_control: ComponentControl,
) -> None:
    seed = seed_for("apiserver-20s")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "adown", big_csv, topic, testenv.kafka_bootstrap,
            worker={"parallelism": 1, "backoffLimit": 6})
    with Watcher(ingestions, "adown") as w:
        _wait_progress(ingestions, "adown", rng, big_csv.stat().st_size)
        apiserver_control.stop()
        time.sleep(20)
        apiserver_control.start()
        st = ingestions.wait_phase("adown", "Completed", timeout=600)
    report = _verify(big_csv, topic, testenv.kafka_bootstrap)
    report_row("4. API server down 20 s", seed, 1, report, st["phase"],
               f"attempts {st['attempts']}")
    check_outcome(report, max(1, int(st["attempts"]) - 1) + 1, w)


# --- 5. the operator dies -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["job-creation", "running", "completion"])
def test_operator_killed(
    moment: str,
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    data: DataVolume,
    new_topic: Callable[..., str],
) -> None:
    seed = seed_for(f"operator-{moment}")
    rng = random.Random(seed)
    rows = 200_000
    csv = write_csv(data.path / "op.csv", rows)
    topic = new_topic(partitions=3)
    with Watcher(ingestions, "opk") as w:
        _create(ingestions, "opk", csv, topic, testenv.kafka_bootstrap)
        if moment == "job-creation":
            time.sleep(rng.uniform(0.0, 0.4))
        elif moment == "running":
            _wait_progress(ingestions, "opk", rng, csv.stat().st_size)
        else:  # the worker is finishing: the Job completes while the operator is down
            wait_for("the last rows", lambda: int(
                (ingestions.status("opk").get("checkpoint") or {}).get("row", 0)) >= rows * 0.8,
                timeout=240, interval=0.02)
        operator.stop(kill=True)
        time.sleep(rng.uniform(0.5, 3.0))
        operator.start()
        st = ingestions.wait_phase("opk", "Completed", timeout=400)
        time.sleep(2)  # anything late (a second Job, a phase change) shows up here
    jobs = ingestions.jobs()
    report = _verify(csv, topic, testenv.kafka_bootstrap)
    report_row(f"5. operator SIGKILLed at {moment}", seed, 1, report, st["phase"],
               f"jobs {jobs}")
    check_outcome(report, 1, w)
    assert jobs == ["opk-1"], jobs
    assert ingestions.status("opk")["phase"] == "Completed"


# --- 6. two attempts racing ---------------------------------------------------------------------


def stale_pod_of(ingestions: Ingestions, namespace: str, job_name: str, name: str
                 ) -> dict[str, Any]:
    """A pod of the Job's own template (its ServiceAccount, its spec snapshot) that the Job does
    not own: a stale attempt the Job controller thinks dead but which still runs."""
    job = wait_for("the Job", lambda: ingestions.batch.read_namespaced_job(job_name, namespace)
                   if job_name in ingestions.jobs() else None, timeout=60)
    template = ingestions.core.api_client.sanitize_for_serialization(job.spec.template)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        # No Job labels: the Job controller must neither adopt nor count it.
        "metadata": {"name": name},
        "spec": copy.deepcopy(template["spec"]),
    }


@pytest.mark.slow
def test_two_attempts_racing_checkpoint_never_moves_back(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    big_csv: Path,
    new_topic: Callable[..., str],
    namespace: str,
) -> None:
    """A second worker of the same run (as a stale pod the Job controller thinks dead but which
    still runs) starts from an early checkpoint and writes while the real pod is ahead: a pod of
    the Job's own template, with its ServiceAccount, that the Job does not own."""
    seed = seed_for("racing")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "race", big_csv, topic, testenv.kafka_bootstrap)
    stale_pod = stale_pod_of(ingestions, namespace, "race-1", "race-stale")
    with Watcher(ingestions, "race") as w:
        _wait_progress(ingestions, "race", rng, big_csv.stat().st_size)
        ingestions.core.create_namespaced_pod(namespace, stale_pod)
        st = ingestions.wait_phase("race", "Completed", timeout=400)
        stale = wait_for(
            "the stale pod to end",
            lambda: (p := ingestions.core.read_namespaced_pod("race-stale", namespace)).status.phase
            in ("Succeeded", "Failed") and p,
            timeout=300,
        )
    (stale_state,) = [cs.state.terminated for cs in stale.status.container_statuses]
    report = _verify(big_csv, topic, testenv.kafka_bootstrap)
    report_row("6. two attempts racing", seed, 1, report, st["phase"],
               f"stale exit {stale_state.exit_code}")
    check_outcome(report, 2, w)
    final = ingestions.status("race")
    assert final["checkpoint"]["row"] == ROWS and final["rowsPublished"] == ROWS, final

