"""One ingestion of every file under an S3 prefix, shared by the pods of one Indexed Job
(issue 12): a file that fails does not stop the others, and a retry runs only that file.

Real pods on the local node, moto (S3) in the node's network namespace, the real broker.
``make scale-bench`` runs it with 1,000 files (CSVKAFKA_SCALE_FILES).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes import watch

from tests.conftest import TestEnv
from tests.operator.conftest import OperatorDeployment, run_kubectl
from tests.operator.test_operator import Ingestions, ingestion, record_figure
from tests.sources.conftest import AWS_KEY_ID, secret_value

SMALL = int(os.environ.get("CSVKAFKA_SCALE_FILES") or 200)
SMALL_ROWS, LARGE_ROWS, LARGE = 100, 100_000, 3
BAD = 42  # the small file that is corrupt past the error budget


def rows_csv(first: int, rows: int, bad_every: int = 0) -> bytes:
    lines = ["id,name,amount"]
    for i in range(first, first + rows):
        broken = bad_every and i % bad_every == 0
        lines.append(f"{i},name-{i}" if broken else f"{i},name-{i},{i % 1000}.5")
    return ("\n".join(lines) + "\n").encode()


class StatusWrites:
    """Counts the writes of one CsvIngestion (MODIFIED events of a watch), second by second."""

    def __init__(self, ingestions: Ingestions, name: str) -> None:
        self.per_second: Counter[int] = Counter()
        self.watch = watch.Watch()
        self.thread = threading.Thread(target=self._main, args=(ingestions, name), daemon=True)
        self.thread.start()

    def _main(self, ingestions: Ingestions, name: str) -> None:
        for event in self.watch.stream(
            ingestions.custom.list_namespaced_custom_object, "csvkafka.io", "v1alpha1",
            ingestions.ns, "csvingestions", field_selector=f"metadata.name={name}",
            timeout_seconds=1800,
        ):
            if event["type"] == "MODIFIED":
                self.per_second[int(time.monotonic())] += 1

    def stop(self) -> str:
        self.watch.stop()
        busy = list(self.per_second.values())
        if not busy:
            return "no writes seen"
        return (f"peak {max(busy)}/s, mean {sum(busy) / len(busy):.1f}/s over the "
                f"{len(busy)} seconds with writes, {sum(busy)} writes")


def test_many_files_on_s3_one_fails_and_a_retry_runs_only_it(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    namespace: str,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    make_secret: Callable[[str, dict[str, str]], str],
    s3_bucket: tuple[Any, str],
    s3_endpoint: str,
) -> None:
    s3, bucket = s3_bucket
    first: dict[str, int] = {}
    for i in range(SMALL):
        key = f"exports/day-{i:04}.csv"
        first[key] = i * SMALL_ROWS
        body = rows_csv(first[key], SMALL_ROWS, bad_every=3 if i == BAD else 0)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for k in range(LARGE):
        key = f"exports/large/big-{k}.csv"
        first[key] = 10_000_000 + k * LARGE_ROWS
        s3.put_object(Bucket=bucket, Key=key, Body=rows_csv(first[key], LARGE_ROWS))
    s3.put_object(Bucket=bucket, Key="exports/large/", Body=b"")  # a console's folder marker
    s3.put_object(Bucket=bucket, Key="elsewhere.csv", Body=rows_csv(99_000_000, 10))
    make_secret("aws", {"AWS_ACCESS_KEY_ID": AWS_KEY_ID,
                        "AWS_SECRET_ACCESS_KEY": secret_value("k")})
    source = {"url": f"s3://{bucket}/exports/", "secretRef": {"name": "aws"},
              "endpointUrl": s3_endpoint}
    topic = new_topic(partitions=3)
    writes = StatusWrites(ingestions, "daily")
    t0 = time.monotonic()
    ingestions.create(ingestion("daily", source, topic, testenv.kafka_bootstrap,
                                worker={"parallelism": 1, "backoffLimit": 3, "pods": 2},
                                errors={"maxErrors": 5}))
    total = SMALL + LARGE
    bad_url = f"s3://{bucket}/exports/day-{BAD:04}.csv"

    st = ingestions.wait_phase("daily", "Failed", timeout=900)
    record_figure(f"{SMALL + LARGE} files, 2 pods: run 1 (s)", f"{time.monotonic() - t0:.0f}")
    record_figure(f"{SMALL + LARGE} files, 2 pods: status writes", writes.stop())
    units = st["units"]
    assert units["kind"] == "Files" and units["total"] == total, units
    assert units["counts"] == {"pending": 0, "running": 0, "completed": total - 1, "failed": 1}
    (failed,) = units["failed"]
    assert failed["sourceUrl"] == bad_url and "bad rows" in failed["reason"], failed
    assert bad_url in st["message"], st["message"]
    out = run_kubectl(testenv, "-n", namespace, "get", "csvi", "daily").stdout
    assert f"Files {total - 1}/{total}, 1 failed" in out, out
    plan = ingestions.custom.get_namespaced_custom_object(
        "csvkafka.io", "v1alpha1", namespace, "csvingestionplans", "daily")
    assert (plan["plan"]["files"], plan["plan"]["units"]) == (total, total)
    good = (SMALL - 1) * SMALL_ROWS + LARGE * LARGE_ROWS
    ids = Counter(int(json.loads(m.value())["id"]) for m in consume_all(topic, good))
    others = {i for key, start in first.items() if key != f"exports/day-{BAD:04}.csv"
              for i in range(start, start + (LARGE_ROWS if "large" in key else SMALL_ROWS))}
    assert others <= set(ids), len(others - set(ids))
    assert not [i for i in others if ids[i] > 1]
    assert 99_000_000 not in ids  # outside the prefix

    # Fix the file, edit the spec: only that file runs again.
    s3.put_object(Bucket=bucket, Key=f"exports/day-{BAD:04}.csv",
                  Body=rows_csv(first[f"exports/day-{BAD:04}.csv"], SMALL_ROWS))
    ingestions.patch_spec("daily", {"retry": 1})
    st = ingestions.wait_phase("daily", "Completed", timeout=600)
    assert st["run"] == 2 and st["units"]["counts"]["completed"] == total, st["units"]
    fixed = range(first[f"exports/day-{BAD:04}.csv"], first[f"exports/day-{BAD:04}.csv"]
                  + SMALL_ROWS)
    ids = Counter(int(json.loads(m.value())["id"]) for m in consume_all(
        topic, good + SMALL_ROWS))
    assert set(fixed) <= set(ids)
    assert not [i for i in others if ids[i] > 1], "a completed file ran again"
