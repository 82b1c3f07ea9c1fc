"""Exactly-once under faults: the operator, worker pods on the real node, the real broker.

The same faults as :mod:`tests.faults.test_faults`, with ``spec.kafka.delivery: exactlyOnce``.
The verifier reads ``read_committed`` and the outcome must be exact: 0 lost, 0 duplicates (the
at-least-once scenarios allow a bound). Each scenario appends its row to the fault report.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest_worker.exitcodes import EXIT_FENCED
from ingest_worker.verify import VerifyReport, consume, verify
from tests.conftest import ComponentControl, TestEnv
from tests.faults.test_faults import (
    EVERY_ROWS,
    ROWS,
    Watcher,
    _kill_at_random_points,
    report_row,
    seed_for,
    stale_pod_of,
)
from tests.node import DataVolume, kill_container
from tests.operator.conftest import OperatorDeployment, wait_for, write_csv
from tests.operator.test_operator import Ingestions, ingestion, running_worker
from tests.sources.servers import RangeFileServer

SLOW_BYTES_PER_SECOND = 120_000
"""A source served this slowly lasts over a minute (ROWS rows, 9.7 MB): long enough to be
mid-run through outages and a racing pod (a pod reads a local file at 800k rows a second)."""


@dataclass(frozen=True)
class Source:
    csv: Path
    url: str
    """What the ingestion reads: the file on the test's data volume, or served slowly."""
    server: RangeFileServer | None = None
    """The slow server, whose rate a test may lift once the faults are over."""


@pytest.fixture
def volume_csv(data: DataVolume) -> Source:
    csv = write_csv(data.path / "big.csv", ROWS)
    return Source(csv, DataVolume(csv.parent).url(csv))


@pytest.fixture
def slow_csv(tmp_path: Path) -> Iterator[Source]:
    csv = write_csv(tmp_path / "slow.csv", ROWS)
    server = RangeFileServer(root=tmp_path, bytes_per_second=SLOW_BYTES_PER_SECOND).start()
    try:
        yield Source(csv, f"{server.url}/slow.csv", server)
    finally:
        server.stop()


def _create(ingestions: Ingestions, name: str, source: Source, topic: str, bootstrap: str,
            kafka: dict[str, Any] | None = None, **spec: Any) -> None:
    body = ingestion(name, source.url if source.url.startswith("http") else
                     DataVolume(source.csv.parent).source(source.csv), topic, bootstrap,
                     checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 1}, **spec)
    body["spec"]["kafka"].update({"delivery": "exactlyOnce", **(kafka or {})})
    ingestions.create(body)


def _verify(source: Source, topic: str, bootstrap: str) -> VerifyReport:
    if source.url.startswith("http"):
        # Read from the disk, not through the slow server; the event ids' prefix (the
        # server's version of the file) is the one the messages carry.
        with source.csv.open("rb") as f:
            return verify(f, topic, bootstrap, source_url=source.url, timeout=120)
    return verify(str(source.csv), topic, bootstrap, source_url=source.url, timeout=120)


def _exact(report: VerifyReport, watcher: Watcher) -> None:
    assert report.ok, report.summary()
    assert report.duplicates == 0 and report.messages == ROWS, report.summary()
    assert not watcher.errors, watcher.errors


@pytest.mark.slow
def test_sigkill_worker_pods(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    volume_csv: Source,
    new_topic: Callable[..., str],
) -> None:
    """SIGKILLs of the worker container at random points (3 by default, as the Job's retry
    backoff doubles: CSVKAFKA_FAULT_POD_KILLS=10 for the full run; the command line's scenario
    does ten): each next pod resumes from the last commit."""
    kills_wanted = int(os.environ.get("CSVKAFKA_FAULT_POD_KILLS", "3"))
    seed = seed_for("eos-sigkill-pods")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "ekill", volume_csv, topic, testenv.kafka_bootstrap,
            worker={"parallelism": 1, "backoffLimit": kills_wanted + 5})
    with Watcher(ingestions, "ekill") as w:
        kills = _kill_at_random_points(
            rng, kills_wanted, ingestions.ns, lambda: running_worker(ingestions, "ekill-1"),
            w.checkpoint, volume_csv.csv.stat().st_size)
        st = ingestions.wait_phase("ekill", "Completed", timeout=900)
    report = _verify(volume_csv, topic, testenv.kafka_bootstrap)
    report_row("EOS 1b. SIGKILL worker pod (Job retries, read_committed)", seed, kills, report,
               st["phase"], f"attempts {st['attempts']}")
    _exact(report, w)
    assert kills == kills_wanted
    assert st["rowsPublished"] == ROWS


@pytest.mark.slow
def test_broker_down_30s_then_past_the_budget_then_retry(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    slow_csv: Source,
    new_topic: Callable[..., str],
    kafka_control: ComponentControl,
) -> None:
    """The broker down for 30 s mid-run (survived), then down past the retry budget (Failed,
    with status never ahead of the last commit), then a spec-edit retry (Completed)."""
    seed = seed_for("eos-broker")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    bootstrap = testenv.kafka_bootstrap
    size = slow_csv.csv.stat().st_size
    # A budget the 30 s outage fits in (with the broker's restart), and the second exceeds.
    _create(ingestions, "ebroker", slow_csv, topic, bootstrap,
            kafka={"retryBudgetSeconds": 60},
            worker={"parallelism": 1, "backoffLimit": 6})
    with Watcher(ingestions, "ebroker") as w:
        target = rng.uniform(0.05, 0.2) * size
        wait_for("progress", lambda: int((ingestions.status("ebroker").get("checkpoint") or {})
                                         .get("byteOffset", 0)) >= target,
                 timeout=180, interval=0.05)
        kafka_control.stop()
        time.sleep(30)
        kafka_control.start()
        # Running again after the outage, further on.
        after = int((ingestions.status("ebroker").get("checkpoint") or {}).get("byteOffset", 0))
        wait_for("progress after the outage", lambda: int(
            (ingestions.status("ebroker").get("checkpoint") or {}).get("byteOffset", 0)) > after,
            timeout=240, interval=0.1)
        st = ingestions.status("ebroker")
        if st.get("phase") == "Completed":
            pytest.fail("the ingestion ended before the second outage: make it slower")
        kafka_control.stop()
        try:
            failed = ingestions.wait_phase("ebroker", "Failed", timeout=300)
        finally:
            kafka_control.start()
        cp_offset = int(failed["checkpoint"]["byteOffset"])
        partial = _verify(slow_csv, topic, bootstrap)
        assert partial.rows_unexpected == 0 and partial.duplicates == 0, partial.summary()
        assert failed.get("message"), failed
        assert slow_csv.server is not None
        slow_csv.server.bytes_per_second = None  # the faults are over: the rest at full speed
        ingestions.patch_spec("ebroker", {"retry": 1})
        st = ingestions.wait_phase("ebroker", "Completed", timeout=600)
    report = _verify(slow_csv, topic, bootstrap)
    report_row("EOS 2+3. broker down 30 s, then past the budget, then spec.retry", seed, 2,
               report, f"Failed -> {st['phase']}", f"checkpoint at failure {cp_offset}")
    _exact(report, w)
    assert "Failed" in w.phases()


@pytest.mark.slow
def test_two_attempts_racing_the_stale_one_is_fenced(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    slow_csv: Source,
    new_topic: Callable[..., str],
    namespace: str,
) -> None:
    """A second worker of the same run (a stale pod the Job controller thinks dead): its
    producer fences the Job's, which yields (exit EXIT_FENCED); the Job's next pod fences the
    stale one in turn. No row is committed twice."""
    seed = seed_for("eos-racing")
    rng = random.Random(seed)
    topic = new_topic(partitions=3)
    _create(ingestions, "erace", slow_csv, topic, testenv.kafka_bootstrap,
            worker={"parallelism": 1, "backoffLimit": 6})
    stale_pod = stale_pod_of(ingestions, namespace, "erace-1", "erace-stale")
    with Watcher(ingestions, "erace") as w:
        # Early in the run: the stale pod must still run when the Job's next pod, ten seconds
        # of backoff after the first one yields, comes to fence it.
        wait_for("the Job's worker", lambda: running_worker(ingestions, "erace-1"), timeout=120,
                 interval=0.1)
        time.sleep(rng.uniform(3.0, 8.0))
        ingestions.core.create_namespaced_pod(namespace, stale_pod)
        st = ingestions.wait_phase("erace", "Completed", timeout=600)
        wait_for("the stale pod to end", lambda: ingestions.core.read_namespaced_pod(
            "erace-stale", namespace).status.phase in ("Succeeded", "Failed"), timeout=300)
    codes = {}
    for pod in ingestions.core.list_namespaced_pod(namespace).items:
        if pod.metadata.name.startswith("erace"):
            for cs in pod.status.container_statuses or []:
                if cs.state.terminated is not None:
                    codes[pod.metadata.name] = cs.state.terminated.exit_code
            if codes.get(pod.metadata.name) == EXIT_FENCED:  # and it says why
                assert "fenced" in str(ingestions.core.read_namespaced_pod_log(
                    pod.metadata.name, namespace, container="worker"))
    report = _verify(slow_csv, topic, testenv.kafka_bootstrap)
    report_row("EOS 6. two attempts racing (fenced)", seed, 1, report, st["phase"],
               f"exit codes {codes}")
    _exact(report, w)
    # The Job's pod was fenced by the stale one, and the Job's next pod fenced the stale one.
    assert codes.pop("erace-stale") == EXIT_FENCED, codes
    assert sorted(codes.values()) == [0, EXIT_FENCED], codes


@pytest.mark.slow
def test_a_sharded_run_killed_three_times_commits_every_row_once(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    data: DataVolume,
) -> None:
    """One file in 4 shards over 2 pods, each shard with its own transactional id and its own
    record in the offsets topic; pods killed mid-shard: every row once, read_committed."""
    rows = 2_400_000
    csv = write_csv(data.path / "rows.csv", rows)
    topic = new_topic(partitions=3)
    shard_bytes = csv.stat().st_size // 4 + 1
    body = ingestion("eshard", data.source(csv), topic, testenv.kafka_bootstrap,
                     worker={"parallelism": 1, "backoffLimit": 10, "pods": 2,
                             "shardBytes": shard_bytes},
                     checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 1})
    body["spec"]["kafka"]["delivery"] = "exactlyOnce"
    created = ingestions.create(body)
    rng = random.Random(seed_for("eos-shards"))
    kills = 0
    for k in range(3):
        target = int(rows * (k + rng.random()) / 5)
        wait_for(f"row {target}", lambda t=target: int(
            ingestions.status("eshard").get("rowsRead", 0)) >= t, timeout=300, interval=0.05)
        wait_for("a worker to kill", lambda: (p := running_worker(ingestions, "eshard-1"))
                 and kill_container(namespace, p, "worker") and p, timeout=60, interval=0.05)
        kills += 1
    st = ingestions.wait_phase("eshard", "Completed", timeout=600)
    assert st["units"]["counts"]["completed"] == 4 and st["rowsPublished"] == rows
    report = verify(str(csv), topic, testenv.kafka_bootstrap, source_url=data.url(csv),
                    timeout=180)
    report_row("EOS 7. sharded run, pods killed (read_committed)", 0, kills, report,
               st["phase"])
    assert report.ok and report.duplicates == 0 and report.messages == rows, report.summary()
    # One committed checkpoint per shard, done, keyed under the ingestion's uid and plan.
    prefix = f"{namespace}/eshard/{created['metadata']['uid']}/{st['units']['plan']}/"
    done: dict[str, bool] = {}
    for m in consume(testenv.kafka_bootstrap, "csvkafka-offsets"):
        key = (m.key() or b"").decode()
        if key.startswith(prefix):
            done[key] = json.loads(m.value())["checkpoint"]["done"]
    assert sorted(done) == [f"{prefix}{u}" for u in range(4)] and all(done.values()), done
