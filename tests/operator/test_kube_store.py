"""The worker's status store: pure parts, and its rules against the real API server
(monotonic checkpoints, stale runs refused, attempts counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from ingest_worker.api import GROUP, PLURAL, VERSION
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.api.status import AttemptRecord, with_attempt
from ingest_worker.checkpoint import Checkpoint, Counters, Outcome
from ingest_worker.checkpoint.kube import (
    AttemptBehind,
    KubeStatusStore,
    StaleRun,
    attempt_record,
    checkpoint_from_status,
    checkpoint_status,
    is_behind,
    progress,
    rate_patch,
)
from ingest_worker.checkpoint.rate import Rate, Sample, eta_seconds, format_eta, next_rate
from ingest_worker.exitcodes import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_TOO_MANY_ERRORS,
    WORKER_EXIT_FATAL,
    WORKER_EXIT_RETRY,
    worker_exit_code,
)
from ingest_worker.job_main import read_env, with_kafka_secret

URL = "file:///data/a.csv"


def cp(offset: int, row: int, total: int | None = 1000) -> Checkpoint:
    return Checkpoint(
        byte_offset=offset,
        row=row,
        line=row + 2,
        source_url=URL,
        source_version="v1",
        counters=Counters(rows_read=row, rows_published=row, bytes_read=offset, bytes_total=total),
    )


def test_progress_is_rounded_down() -> None:
    assert progress(0, None) is None
    assert progress(999, 1000) == "99%" and progress(1000, 1000) == "100%"


def test_status_round_trip_and_monotonic_rule() -> None:
    status = {**checkpoint_status(cp(500, 10)), "sourceUrl": URL}
    back = checkpoint_from_status(status, URL)
    assert back is not None
    assert (back.byte_offset, back.row, back.line, back.source_version) == (500, 10, 12, "v1")
    assert back.counters.rows_published == 10 and back.counters.bytes_total == 1000
    assert is_behind(status, cp(400, 8)) and not is_behind(status, cp(500, 10))
    # After the operator reset the status for another file, nothing is "behind".
    assert not is_behind({**status, "sourceUrl": "file:///other.csv"}, cp(400, 8))
    assert checkpoint_from_status({}, URL) is None


def test_the_rate_is_smoothed_between_written_checkpoints() -> None:
    first = next_rate(None, Sample(10.0, 0, 0), Sample(12.0, 2000, 100_000))
    assert first == Rate(1000.0, 50_000.0)
    # A slow interval moves the average by its weight, not all the way.
    slow = next_rate(first, Sample(12.0, 2000, 100_000), Sample(14.0, 2200, 110_000))
    assert slow is not None and slow.rows_per_second == pytest.approx(0.3 * 100 + 0.7 * 1000)
    # No time, or counters that went back (another attempt's checkpoint): the rate stays.
    assert next_rate(first, Sample(14.0, 10, 10), Sample(14.0, 20, 20)) is first
    assert next_rate(first, Sample(14.0, 10, 10), Sample(15.0, 5, 5)) is first


def test_the_eta_comes_from_the_bytes_left() -> None:
    rate = Rate(1000.0, 1000.0)
    assert eta_seconds(rate, 250_000, 500_000) == 250.0
    assert eta_seconds(rate, 600, 500) == 0.0
    assert eta_seconds(rate, 1, None) is None  # size unknown: a compressed source
    assert eta_seconds(None, 1, 500) is None and eta_seconds(Rate(5.0, 0.0), 1, 500) is None
    seconds = (0, 45, 59.6, 250, 3600, 3720, 90_000)
    assert [format_eta(s) for s in seconds] == [
        "0s",
        "45s",
        "1m00s",
        "4m10s",
        "1h00m",
        "1h02m",
        "1d01h",
    ]


def test_the_status_patches_of_rate_and_history() -> None:
    patch = rate_patch(Rate(1234.56, 1000.0), cp(250, 5, total=250_250))
    assert patch == {"rowsPerSecond": 1234.6, "eta": "4m10s"}
    assert rate_patch(Rate(1.0, 1.0), cp(250, 5, total=None)) == {
        "rowsPerSecond": 1.0,
        "eta": None,
    }
    assert rate_patch(None, cp(250, 5)) == {"rowsPerSecond": None, "eta": None}
    # The last three attempts, newest first; an attempt recorded twice keeps its last record.
    history: list[AttemptRecord] = []
    for n in (1, 2, 3, 4):
        history = with_attempt(history, AttemptRecord(attempt=n, outcome="Failed", message=f"{n}"))
    assert [r.attempt for r in history] == [4, 3, 2]
    history = with_attempt(history, AttemptRecord(attempt=4, outcome="Completed"))
    assert [(r.attempt, r.outcome) for r in history] == [
        (4, "Completed"),
        (3, "Failed"),
        (2, "Failed"),
    ]
    # Scrubbed of credentials, and cut to fit the schema.
    secret = "reading https://a.blob.core.windows.net/c/x?sig=hunter2 failed: " + "y" * 5000
    record = attempt_record(5, 2, Outcome(False, secret))
    assert (record.attempt, record.run, record.outcome) == (5, 2, "Failed")
    assert "hunter2" not in record.message and len(record.message) == 1024
    assert attempt_record(1, 1, Outcome(True, "done")).outcome == "Completed"


def test_exit_codes_and_env(tmp_path: Path) -> None:
    assert worker_exit_code(True, 0) == 0
    # Source missing, a bad job, too many bad rows: do not retry.
    for code in (EXIT_FATAL, EXIT_CONFIG, EXIT_TOO_MANY_ERRORS, EXIT_KAFKA):
        assert worker_exit_code(False, code) == WORKER_EXIT_FATAL
    # Interrupted with a checkpoint: the Job may retry.
    assert worker_exit_code(False, EXIT_INTERRUPTED) == EXIT_INTERRUPTED
    # The pod's fatal code is none of the run's, nor the retry code a crash gives.
    run_codes = {0, EXIT_FATAL, EXIT_CONFIG, EXIT_TOO_MANY_ERRORS, EXIT_INTERRUPTED, EXIT_KAFKA}
    assert WORKER_EXIT_FATAL not in run_codes | {WORKER_EXIT_RETRY}
    env = read_env(
        {"CSVKAFKA_INGESTION_NAME": "a", "CSVKAFKA_INGESTION_NAMESPACE": "n", "CSVKAFKA_RUN": "2"}
    )
    assert (env.name, env.namespace, env.run, env.spec_json) == ("a", "n", 2, None)
    (tmp_path / "sasl.username").write_text("u\n")
    (tmp_path / "..data").mkdir()
    spec = CsvIngestionSpec.model_validate(
        {
            "source": {"url": URL},
            "kafka": {
                "bootstrapServers": "k:1",
                "topic": "t",
                "producerProperties": {"linger.ms": "5"},
            },
        }
    )
    props = with_kafka_secret(spec, tmp_path).kafka.producer_properties
    assert props == {"linger.ms": "5", "sasl.username": "u"}


# --- against the API server --------------------------------------------------------------------


@pytest.fixture
def resource(crd_installed: None, kube_api: client.ApiClient, namespace: str) -> str:
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CsvIngestion",
            "metadata": {"name": "s"},
            "spec": {"source": {"url": URL}, "kafka": {"bootstrapServers": "k:1", "topic": "t"}},
        },
    )
    # What the operator writes before it creates run 2's Job.
    api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "s",
        {"status": {"phase": "Pending", "run": 2, "sourceUrl": URL}},
    )
    return "s"


def _status(kube_api: client.ApiClient, namespace: str) -> dict[str, Any]:
    body = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "s"
    )
    st: dict[str, Any] = body["status"]
    return st


def clocked_store(
    resource: str, kube_api: client.ApiClient, namespace: str, clock: list[float], **kw: Any
) -> KubeStatusStore:
    """Run 2's store, on a clock the test moves (``clock[0]``)."""
    return KubeStatusStore(
        namespace, resource, run=2, source_url=URL, api=kube_api, clock=lambda: clock[0], **kw
    )


def test_store_rules_on_a_real_resource(
    resource: str, kube_api: client.ApiClient, namespace: str
) -> None:
    store = KubeStatusStore(
        namespace, resource, run=2, source_url=URL, api=kube_api, min_interval=0
    )
    assert store.load() is None
    assert store.start() == 1 and store.start() == 2
    store.save(cp(500, 10))
    st = _status(kube_api, namespace)
    assert st["checkpoint"]["byteOffset"] == 500 and st["rowsPublished"] == 10
    assert st["progress"] == "50%" and st["attempts"] == 2 and st["phase"] == "Pending"

    # An older checkpoint (a second attempt of the run, behind) never moves it back: that
    # attempt is told to yield.
    behind = KubeStatusStore(
        namespace, resource, run=2, source_url=URL, api=kube_api, min_interval=0
    )
    with pytest.raises(AttemptBehind):
        behind.save(cp(300, 6))
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 500

    stale = KubeStatusStore(
        namespace, resource, run=1, source_url=URL, api=kube_api, min_interval=0
    )
    with pytest.raises(StaleRun):
        stale.save(cp(900, 20))
    with pytest.raises(StaleRun):
        stale.load()
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 500

    store.final(cp(800, 16), Outcome(False, "source changed"))
    st = _status(kube_api, namespace)
    assert st["checkpoint"]["byteOffset"] == 800 and st["lastError"] == "source changed"
    loaded = store.load()
    assert loaded is not None and loaded.byte_offset == 800 and loaded.counters.rows_read == 16


def test_store_throttles_saves(resource: str, kube_api: client.ApiClient, namespace: str) -> None:
    clock = [10.0]
    store = clocked_store(resource, kube_api, namespace, clock, min_interval=1.0)
    store.save(cp(100, 1))
    clock[0] = 10.5
    store.save(cp(200, 2))  # within a second: skipped
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 100
    store.final(cp(200, 2), Outcome(True, "done"))  # final always writes
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 200
    assert store.writes == 2


def test_throttle_never_lets_the_checkpoint_lag_half_an_interval(
    resource: str, kube_api: client.ApiClient, namespace: str
) -> None:
    clock = [10.0]
    store = clocked_store(
        resource, kube_api, namespace, clock, min_interval=60.0, max_lag_rows=1000
    )
    store.save(cp(100, 1))
    store.save(cp(200, 400))  # throttled: 399 rows behind is less than half an interval
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 100
    store.save(cp(300, 501))  # 500 rows behind: written despite the throttle
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 300


def test_store_writes_the_rate_the_eta_and_the_history(
    resource: str, kube_api: client.ApiClient, namespace: str
) -> None:
    clock = [100.0]
    store = clocked_store(resource, kube_api, namespace, clock, min_interval=0)
    assert store.start() == 1
    store.save(cp(100, 10, total=10_000))
    st = _status(kube_api, namespace)
    assert "rowsPerSecond" not in st and "eta" not in st  # one checkpoint is not a rate
    clock[0] = 102.0
    store.save(cp(2100, 210, total=10_000))  # 200 rows and 2000 bytes in 2 s
    st = _status(kube_api, namespace)
    assert st["rowsPerSecond"] == 100.0 and st["eta"] == "8s"  # 7900 bytes at 1000/s: 7.9 s
    store.final(cp(10_000, 1000, total=10_000), Outcome(True, "completed: 1000 rows"))
    st = _status(kube_api, namespace)
    assert "rowsPerSecond" not in st and "eta" not in st
    assert st["history"] == [
        {
            "attempt": 1,
            "run": 2,
            "time": st["history"][0]["time"],
            "outcome": "Completed",
            "message": "completed: 1000 rows",
        }
    ]
    # A second attempt that fails goes first; final() then fail() make one record.
    assert store.start() == 2
    store.final(cp(10_000, 1000, total=10_000), Outcome(False, "Kafka unavailable"))
    store.fail("Kafka unavailable")
    history = _status(kube_api, namespace)["history"]
    assert [(h["attempt"], h["outcome"]) for h in history] == [(2, "Failed"), (1, "Completed")]
