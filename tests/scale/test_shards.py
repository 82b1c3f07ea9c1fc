"""One huge file, cut into byte-range shards that pods of one Indexed Job share (issue 12).

Real pods on the local node, the real broker. Sizes are CI's (a 50 MB file in 4 shards);
``make scale-bench`` runs the
same file at 1 GB (CSVKAFKA_SCALE_SHARD_BYTES, CSVKAFKA_SCALE_FILE_BYTES).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.conftest import TestEnv
from tests.node import DataVolume, kill_container
from tests.operator.conftest import OperatorDeployment, run_kubectl, wait_for, write_csv
from tests.operator.test_operator import (
    Ingestions,
    ingestion,
    record_figure,
    running_worker,
)
from tests.scale.data import data_rows, naive_cuts_inside_quotes, quoted_newlines_csv

SHARD_BYTES = int(os.environ.get("CSVKAFKA_SCALE_SHARD_BYTES") or 12 << 20)
FILE_BYTES = int(os.environ.get("CSVKAFKA_SCALE_FILE_BYTES") or 4 * SHARD_BYTES - (1 << 16))


def by_id(messages: list[Any]) -> dict[str, tuple[bytes | None, bytes]]:
    out: dict[str, tuple[bytes | None, bytes]] = {}
    for m in messages:
        out[json.loads(m.value())["_id"]] = (m.key(), m.value())
    return out


def test_quoted_newlines_across_shard_boundaries_land_once_as_one_pod_would(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = quoted_newlines_csv(data.path / "notes.csv", FILE_BYTES, SHARD_BYTES)
    shards = -(-csv.stat().st_size // SHARD_BYTES)
    assert shards == 4
    assert naive_cuts_inside_quotes(csv, SHARD_BYTES) == shards - 1  # every boundary is a trap
    rows = data_rows(csv)
    one, four = new_topic(partitions=3), new_topic(partitions=3)
    for name, topic, pods in (("one", one, 1), ("four", four, 4)):
        body = ingestion(name, data.source(csv), topic, testenv.kafka_bootstrap, worker={
            "parallelism": 1, "backoffLimit": 3, "pods": pods, "shardBytes": SHARD_BYTES})
        body["spec"]["kafka"]["keyColumns"] = ["id"]
        ingestions.create(body)
    st = ingestions.wait_phase("four", "Completed", timeout=600)
    ingestions.wait_phase("one", "Completed", timeout=600)
    units = st["units"]
    assert units["kind"] == "Shards" and units["total"] == shards, units
    assert units["counts"] == {"pending": 0, "running": 0, "completed": shards, "failed": 0}
    assert st["rowsPublished"] == rows and st["rowsFailed"] == 0
    out = run_kubectl(testenv, "-n", namespace, "get", "csvi", "four").stdout
    assert f"Shards {shards}/{shards}" in out, out
    job = ingestions.batch.read_namespaced_job(st["jobName"], namespace)
    assert job.spec.completion_mode == "Indexed" and job.spec.parallelism == 4
    # Every row once, the same bytes, key and event id as the one-pod run of the same file.
    got_one, got_four = consume_all(one, rows), consume_all(four, rows)
    dupes = [k for k, n in Counter(json.loads(m.value())["_id"] for m in got_four).items()
             if n > 1]
    assert not dupes, dupes[:5]
    assert len(got_four) == rows
    assert by_id(got_four) == by_id(got_one)


KILL_ROWS = int(os.environ.get("CSVKAFKA_SCALE_KILL_ROWS") or 2_400_000)
KILLS = 5
EVERY_ROWS = 10_000


def test_pods_of_a_sharded_run_killed_five_times_lose_nothing(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    data: DataVolume,
) -> None:
    csv = write_csv(data.path / "rows.csv", KILL_ROWS)
    topic = new_topic(partitions=3)
    shard_bytes = csv.stat().st_size // 4 + 1
    ingestions.create(ingestion(
        "killed", data.source(csv), topic, testenv.kafka_bootstrap,
        worker={"parallelism": 1, "backoffLimit": 10, "pods": 2, "shardBytes": shard_bytes},
        checkpoint={"everyRows": EVERY_ROWS, "everySeconds": 1}))
    rng = random.Random(12)
    kills: list[tuple[int, str]] = []
    job = "killed-1"

    def rows_read() -> int:
        return int(ingestions.status("killed").get("rowsRead", 0))

    def kill_one() -> str | None:
        # The API may still call a container running that has just exited: try the next.
        pod = running_worker(ingestions, job)
        return pod if pod and kill_container(namespace, pod, "worker") else None

    for k in range(KILLS):
        # At random points spread over the run: after a random share of the rows.
        target = int(KILL_ROWS * (k + rng.random()) / (KILLS + 2))
        wait_for(f"row {target}", lambda: rows_read() >= target,  # noqa: B023
                 timeout=300, interval=0.05)
        pod = wait_for("a worker to kill", kill_one, timeout=60, interval=0.05)
        kills.append((rows_read(), pod))
    st = ingestions.wait_phase("killed", "Completed", timeout=600)
    assert st["units"]["counts"]["completed"] == 4 and st["rowsPublished"] >= KILL_ROWS
    # 5 pods killed mid-shard: every one was replaced (its index retried), every row is there.
    job_status = ingestions.batch.read_namespaced_job(job, namespace).status
    assert job_status.failed == KILLS and len(ingestions.worker_pods(job)) == 2 + KILLS
    messages = consume_all(topic, KILL_ROWS, timeout=180)
    ids = Counter(int(json.loads(m.value())["id"]) for m in messages)
    assert set(ids) == set(range(KILL_ROWS)), "rows lost"
    duplicates = sum(ids.values()) - KILL_ROWS
    # A kill re-sends at most the unsaved rows below the watermark (a save every half interval,
    # taken a chunk at a time) and the chunks in flight (half an interval): one interval and one
    # chunk (ingest_worker/run.py; one worker: 2 chunks in flight of EVERY_ROWS / 4 rows).
    bound = KILLS * (EVERY_ROWS + EVERY_ROWS // 4)
    record_figure("sharded run, 5 kills: duplicates", f"{duplicates} (bound {bound})")
    assert duplicates <= bound, (duplicates, kills)
