"""The worker's status store: pure parts, and its rules against the real API server
(monotonic checkpoints, stale runs refused, attempts counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from ingest_worker.api import GROUP, PLURAL, VERSION
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.checkpoint import Checkpoint, Counters, Outcome
from ingest_worker.checkpoint.kube import (
    AttemptBehind,
    KubeStatusStore,
    StaleRun,
    checkpoint_from_status,
    checkpoint_status,
    is_behind,
    progress,
)
from ingest_worker.exitcodes import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
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


def test_exit_codes_and_env(tmp_path: Path) -> None:
    assert worker_exit_code(True, 0) == 0
    # Source missing, a bad job, too many bad rows: do not retry.
    for code in (EXIT_FATAL, EXIT_CONFIG, EXIT_TOO_MANY_ERRORS):
        assert worker_exit_code(False, code) == WORKER_EXIT_FATAL
    # Interrupted with a checkpoint: the Job may retry.
    assert worker_exit_code(False, EXIT_INTERRUPTED) == EXIT_INTERRUPTED
    # The pod's fatal code is none of the run's, nor the retry code a crash gives.
    run_codes = {0, EXIT_FATAL, EXIT_CONFIG, EXIT_TOO_MANY_ERRORS, EXIT_INTERRUPTED}
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
    clock = [0.0]
    store = KubeStatusStore(
        namespace,
        resource,
        run=2,
        source_url=URL,
        api=kube_api,
        min_interval=1.0,
        clock=lambda: clock[0],
    )
    clock[0] = 10.0
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
    store = KubeStatusStore(
        namespace,
        resource,
        run=2,
        source_url=URL,
        api=kube_api,
        min_interval=60.0,
        clock=lambda: clock[0],
        max_lag_rows=1000,
    )
    store.save(cp(100, 1))
    store.save(cp(200, 400))  # throttled: 399 rows behind is less than half an interval
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 100
    store.save(cp(300, 501))  # 500 rows behind: written despite the throttle
    assert _status(kube_api, namespace)["checkpoint"]["byteOffset"] == 300
