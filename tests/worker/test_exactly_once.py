"""Exactly-once delivery against the real broker (auto-creation off, as in production).

Every check reads the topics as an exactly-once ingestion's consumers must, ``read_committed``,
and asserts 0 duplicates, not a bound. Kills are SIGKILLs of the whole process at random
points; each next attempt resumes from the checkpoint committed in the offsets topic, not from
the file the command line mirrors it to.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from ingest_worker import MemoryCheckpointStore, run_ingestion
from ingest_worker.exactly_once import transactional_config
from ingest_worker.exitcodes import EXIT_FENCED, EXIT_KAFKA
from ingest_worker.kafka import deadletter
from ingest_worker.kafka.offsets import CheckpointKey
from ingest_worker.verify import consume, verify
from tests.conftest import ROOT, unique_name
from tests.faults.test_faults import report_row, seed_for
from tests.operator.conftest import write_csv
from tests.worker.test_kafka import make_spec
from tests.worker.test_refusals import _headers, _rows, _topic

EVERY_ROWS = 10_000


def _cli(csv: Path, topic: str, bootstrap: str, txn_id: str, cp: Path, *extra: str,
         every_rows: int = EVERY_ROWS) -> list[str]:
    return [sys.executable, "-m", "ingest_worker", "run", str(csv), "--topic", topic,
            "--bootstrap-servers", bootstrap, "--exactly-once", "--transactional-id", txn_id,
            "--checkpoint", str(cp), "--checkpoint-rows", str(every_rows),
            "--checkpoint-seconds", "1", "--parallelism", "2", "--log-level", "WARNING", *extra]


def _row(cp: Path) -> int:
    try:
        return int(json.loads(cp.read_text())["checkpoint"]["row"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def _start(cmd: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=out, stderr=out)


def _ends(admin: AdminClient, topic: str) -> tuple[int, int]:
    """(last stable offsets, high watermarks) of ``topic``, summed over its partitions."""
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    sums = []
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        req = {TopicPartition(topic, p): OffsetSpec.latest() for p in parts}
        for _ in range(50):  # a new topic's leaders are elected in the first moments
            futures = admin.list_offsets(req, isolation_level=level, request_timeout=10)
            try:
                sums.append(sum(f.result(timeout=10).offset for f in futures.values()))
                break
            except KafkaException:
                time.sleep(0.1)
    return sums[0], sums[1]


def _kill_at_rows(cmd: list[str], cp: Path, targets: list[int], rng: random.Random,
                  log: Path) -> tuple[int, list[int]]:
    """Runs ``cmd`` again and again, SIGKILLing it once its mirrored checkpoint passes each
    target, until a run exits 0; returns (kills, exit codes of the runs that ended)."""
    kills, codes = 0, []
    for _attempt in range(len(targets) + 10):
        proc = _start(cmd, log)
        if kills < len(targets):
            deadline = time.monotonic() + 120
            while proc.poll() is None and _row(cp) < targets[kills] and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.1))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        rc = proc.wait(timeout=300)
        if rc >= 0:
            codes.append(rc)
        if rc == 0:
            return kills, codes
    raise AssertionError(f"the ingestion never completed: exit codes {codes}; {log.read_text()}")


def test_ten_sigkills_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """Ten SIGKILLs at random points of a 1.5M-row file, each followed by a restart: a
    read_committed consumer sees every row exactly once."""
    seed = seed_for("eos-sigkill")
    rng = random.Random(seed)
    rows = 1_500_000
    csv = write_csv(tmp_path / "big.csv", rows)
    topic = new_topic(partitions=3)
    cp = tmp_path / "cp.json"
    cmd = _cli(csv, topic, kafka_bootstrap, unique_name("txn"), cp)
    # Up to 80%: the last kill must land before the run ends (it does 1M rows/s on this host).
    targets = sorted(int(rng.uniform(0.0, 0.8) * rows) for _ in range(10))
    kills, codes = _kill_at_rows(cmd, cp, targets, rng, tmp_path / "worker.log")
    final = json.loads(cp.read_text())["checkpoint"]
    assert final["done"] and final["row"] == rows
    assert final["counters"]["rowsPublished"] == rows
    report = verify(str(csv), topic, kafka_bootstrap, timeout=120)
    report_row("EOS 1. SIGKILL x10 (CLI, read_committed)", seed, kills, report, "exit 0")
    assert kills == 10, codes
    assert report.ok, report.summary()
    assert report.duplicates == 0 and report.messages == rows, report.summary()


def test_a_consumer_not_reading_committed_sees_the_aborted_rows(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    new_topic: Callable[..., str],
) -> None:
    """Killed with a transaction open (high watermark above the last stable offset, checked
    before and after the kill), then resumed: read_committed sees every row once, while
    read_uncommitted also sees the rows of the aborted transaction."""
    rows = 1_500_000
    csv = write_csv(tmp_path / "big.csv", rows)
    topic = new_topic(partitions=3)
    cp = tmp_path / "cp.json"
    # Transactions of 200,000 rows: one is open, with rows sent, most of the time.
    cmd = _cli(csv, topic, kafka_bootstrap, unique_name("txn"), cp, every_rows=200_000)
    for _attempt in range(5):  # a commit may land between the look and the kill: again
        proc = _start(cmd, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, "no open transaction"
                stable, high = _ends(kafka_admin, topic)
                if _row(cp) > 0 and high > stable:
                    break
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        # A kill during a commit still commits: the coordinator writes the markers the producer
        # asked for. Give them a moment, then look again.
        time.sleep(2)
        stable, high = _ends(kafka_admin, topic)
        if high > stable:  # the killed attempt's transaction is still open
            break
    assert high > stable, (stable, high)
    # The open transaction's rows: in the log, seen read_uncommitted, hidden read_committed.
    committed_then = len(consume(kafka_bootstrap, topic, timeout=30))
    uncommitted_then = len(consume(kafka_bootstrap, topic, timeout=30, committed=False))
    assert uncommitted_then > committed_then, (uncommitted_then, committed_then)
    assert subprocess.run(cmd, cwd=ROOT, timeout=300).returncode == 0
    committed = verify(str(csv), topic, kafka_bootstrap, timeout=120)
    uncommitted = verify(str(csv), topic, kafka_bootstrap, timeout=120, committed=False)
    assert committed.ok and committed.duplicates == 0, committed.summary()
    assert uncommitted.duplicates > 0, uncommitted.summary()
    assert uncommitted.messages == committed.messages + uncommitted.duplicates
    print(f"aborted rows a read_uncommitted consumer sees: {uncommitted.duplicates}")


def test_bad_rows_are_dead_lettered_exactly_once_across_kills(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """A bad row every 997 rows, three kills: each bad row is in the dead-letter topic once."""
    seed = seed_for("eos-bad-rows")
    rng = random.Random(seed)
    rows = 600_000
    lines = [b"id,name,amount"]
    for i in range(1, rows + 1):
        lines.append(b"%d,n%d" % (i, i) if i % 997 == 0 else b"%d,n%d,%d" % (i, i, i * 3))
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"\n".join(lines) + b"\n")
    topic, dlq = new_topic(partitions=3), new_topic(partitions=1)
    cp = tmp_path / "cp.json"
    cmd = _cli(csv, topic, kafka_bootstrap, unique_name("txn"), cp, "--dead-letter-topic", dlq)
    targets = sorted(int(rng.uniform(0.05, 0.85) * rows) for _ in range(3))
    kills, _ = _kill_at_rows(cmd, cp, targets, rng, tmp_path / "worker.log")
    bad = rows // 997
    final = json.loads(cp.read_text())["checkpoint"]["counters"]
    assert (final["rowsPublished"], final["rowsFailed"]) == (rows - bad, bad)
    report = verify(str(csv), topic, kafka_bootstrap, dead_letter_topic=dlq,
                    reported_bad=bad, timeout=120)
    report_row("EOS 4. bad rows with kills (CLI, read_committed)", seed, kills, report, "exit 0")
    assert report.ok, report.summary()
    assert report.duplicates == 0 and report.dlq_duplicates == 0, report.summary()
    assert report.dlq_messages == bad and report.bad_expected == bad, report.summary()


def _eos_run(path: Path, topic: str, bootstrap: str, key: CheckpointKey,
             **over: Any) -> Any:
    spec = make_spec(path, topic, bootstrap, kafka__delivery="exactlyOnce", **over)
    return run_ingestion(spec, MemoryCheckpointStore(), txn_key=key)


@pytest.mark.parametrize("refusal", ["too-large-for-the-topic", "keyless-to-compacted"])
def test_a_row_kafka_refuses_is_dead_lettered_once(
    refusal: str, tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Any]],
) -> None:
    """Inside a transaction, a row the broker refuses dooms the whole transaction, and the
    broker fails its whole request alike. So the worker reads the topic's limits first and
    refuses such rows itself: batches are bounded by the topic's max.message.bytes (a row too
    large is the client's refusal, alone), and a compacted topic's keyless rows are set aside
    before sending. The transaction goes on; nothing is aborted."""
    path = tmp_path / "rows.csv"
    props: dict[str, str] = {}
    if refusal == "too-large-for-the-topic":
        big = secrets.token_hex(300 * 1024).encode()
        path.write_bytes(_rows(3000, 1500, big))
        topic = _topic(kafka_admin, 1, **{"max.message.bytes": str(512 * 1024)})
        props = {"compression.type": "none"}
        code = b"10"  # MSG_SIZE_TOO_LARGE
    else:
        path.write_bytes(b"id,name\n" + b"".join(
            b"%s,n%d\n" % (b"" if i == 1500 else str(i).encode(), i) for i in range(1, 3001)))
        topic = _topic(kafka_admin, 1, **{"cleanup.policy": "compact"})
        code = b"87"  # INVALID_RECORD
    dlq = _topic(kafka_admin, 1)
    key = CheckpointKey(unique_name("txn"), unique_name("key"))
    result = _eos_run(path, topic, kafka_bootstrap, key, kafka__deadLetterTopic=dlq,
                      kafka__keyColumns=["id"], kafka__producerProperties=props)
    assert result.completed, result.message
    c = result.counters
    assert (c.rows_read, c.rows_published, c.rows_failed) == (3000, 2999, 1)
    published = consume_all(topic, 2999)
    assert len(published) == 2999
    [dead] = consume_all(dlq, 1)
    h = _headers(dead)
    assert h[deadletter.LINE] == b"1501" and h[deadletter.KAFKA_ERROR] == code
    assert len(consume(kafka_bootstrap, topic, committed=False)) == 2999  # none aborted


def test_an_offsets_topic_retention_could_empty_is_refused(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    new_topic: Callable[..., str],
) -> None:
    csv = write_csv(tmp_path / "small.csv", 100)
    offsets = unique_name("offsets")
    kafka_admin.create_topics([NewTopic(offsets, 1, 1, config={"cleanup.policy": "delete"})])[
        offsets].result(timeout=60)
    result = _eos_run(csv, new_topic(partitions=1), kafka_bootstrap,
                      CheckpointKey(unique_name("txn"), "k"), kafka__offsetsTopic=offsets)
    assert not result.completed and result.exit_code == EXIT_KAFKA
    assert f"offsets topic {offsets} has cleanup.policy=delete" in result.message
    created = unique_name("offsets")
    result = _eos_run(csv, new_topic(partitions=1), kafka_bootstrap,
                      CheckpointKey(unique_name("txn"), "k"), kafka__offsetsTopic=created)
    assert result.completed, result.message
    from confluent_kafka.admin import ConfigResource, ResourceType

    res = ConfigResource(ResourceType.TOPIC, created)
    cfg = kafka_admin.describe_configs([res])[res].result(timeout=30)
    assert cfg["cleanup.policy"].value == "compact"


def test_a_completed_unit_stays_complete_until_a_restart_or_a_new_file(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
) -> None:
    """The checkpoint in Kafka says done: a second run sends nothing. A new restart generation,
    and a replaced file (onChange: Restart), each start over from the first row."""
    csv = write_csv(tmp_path / "f.csv", 5000)
    topic = new_topic(partitions=1)
    key = CheckpointKey(unique_name("txn"), unique_name("key"))
    assert _eos_run(csv, topic, kafka_bootstrap, key).completed
    again = _eos_run(csv, topic, kafka_bootstrap, key)
    assert again.completed and again.message.startswith("already complete")
    assert len(consume(kafka_bootstrap, topic)) == 5000
    restarted = CheckpointKey(key.transactional_id, key.key, restart=1)
    assert _eos_run(csv, topic, kafka_bootstrap, restarted).counters.rows_published == 5000
    assert len(consume(kafka_bootstrap, topic)) == 10_000
    write_csv(csv, 3000)  # replaced
    result = _eos_run(csv, topic, kafka_bootstrap, restarted, source__onChange="Restart")
    assert result.completed and result.counters.rows_published == 3000
    assert len(consume(kafka_bootstrap, topic)) == 13_000


def test_two_attempts_racing_the_older_is_fenced_and_yields(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """A second attempt of the same transactional id starts while the first runs: the first
    is fenced, exits EXIT_FENCED, and nothing it sent after that is visible read_committed."""
    rows = 1_500_000
    csv = write_csv(tmp_path / "big.csv", rows)
    topic = new_topic(partitions=3)
    txn = unique_name("txn")
    first = _start(_cli(csv, topic, kafka_bootstrap, txn, tmp_path / "a.json"),
                   tmp_path / "a.log")
    deadline = time.monotonic() + 60
    while _row(tmp_path / "a.json") < 100_000:
        assert first.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "a.log").read_text()
        time.sleep(0.01)
    second = _start(_cli(csv, topic, kafka_bootstrap, txn, tmp_path / "b.json"),
                    tmp_path / "b.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    assert first.wait(timeout=60) == EXIT_FENCED, (tmp_path / "a.log").read_text()
    assert "fenced" in (tmp_path / "a.log").read_text()
    report = verify(str(csv), topic, kafka_bootstrap, timeout=120)
    assert report.ok and report.duplicates == 0 and report.messages == rows, report.summary()
    first_row = json.loads((tmp_path / "b.json").read_text())["checkpoint"]
    assert first_row["done"] and first_row["counters"]["rowsPublished"] == rows


def test_transaction_timeout_bounds_the_message_timeout() -> None:
    spec = make_spec("/x.csv", "t", "b:9092", kafka__delivery="exactlyOnce",
                     kafka__retryBudgetSeconds=600,
                     kafka__producerProperties={"transaction.timeout.ms": "20000"})
    conf = transactional_config(spec, "id-1")
    assert conf["transactional.id"] == "id-1"
    assert int(conf["message.timeout.ms"]) == 20_000
    default = transactional_config(make_spec("/x.csv", "t", "b:9092"), "id-2")
    assert int(default["transaction.timeout.ms"]) == 60_000
    assert int(default["message.timeout.ms"]) == 60_000


def test_keys_derive_from_the_uid_and_each_unit_has_its_own() -> None:
    key = CheckpointKey.of_ingestion("ns", "sales", "0f1e-uid", restart=2)
    assert (key.transactional_id, key.key, key.restart) == ("csvkafka-0f1e-uid",
                                                            "ns/sales/0f1e-uid", 2)
    unit = key.for_unit("digest9", 7)
    assert (unit.transactional_id, unit.key, unit.restart) == (
        "csvkafka-0f1e-uid-7", "ns/sales/0f1e-uid/digest9/7", 2)


class _Offsets:
    def __init__(self, value: dict[str, Any] | None) -> None:
        self.value = value

    def read(self, key: CheckpointKey) -> dict[str, Any] | None:
        return self.value


def _cp(offset: int, version: str = "v1") -> Any:
    from ingest_worker.checkpoint import Checkpoint

    return Checkpoint(byte_offset=offset, row=offset // 10, line=offset // 10 + 2,
                      source_url="s3://b/k", source_version=version)


@pytest.mark.parametrize(("kafka", "mirrored", "expected"), [
    (None, None, None),
    (None, 500, 500),  # an at-least-once run's checkpoint, before the mode changed
    (900, 500, 900),  # status lags behind Kafka
    (500, 900, 900),  # status of an at-least-once run, further on: its rows are delivered
])
def test_kafka_is_the_checkpoint_and_status_only_mirrors_it(
    kafka: int | None, mirrored: int | None, expected: int | None
) -> None:
    from ingest_worker.kafka.offsets import KafkaCheckpointStore

    key = CheckpointKey("t", "k", restart=1)
    value = None if kafka is None else {"checkpoint": _cp(kafka).to_dict(), "restart": 1}
    store = KafkaCheckpointStore(MemoryCheckpointStore(None if mirrored is None
                                                       else _cp(mirrored)),
                                 _Offsets(value), key)  # type: ignore[arg-type]
    got = store.load()
    assert (got.byte_offset if got else None) == expected


def test_a_checkpoint_of_an_earlier_restart_or_another_version_is_not_resumed() -> None:
    from ingest_worker.kafka.offsets import KafkaCheckpointStore

    earlier = {"checkpoint": _cp(900).to_dict(), "restart": 0}
    store = KafkaCheckpointStore(MemoryCheckpointStore(), _Offsets(earlier),  # type: ignore[arg-type]
                                 CheckpointKey("t", "k", restart=1))
    assert store.load() is None
    other = {"checkpoint": _cp(900, "v2").to_dict(), "restart": 1}
    store = KafkaCheckpointStore(MemoryCheckpointStore(_cp(950)), _Offsets(other),  # type: ignore[arg-type]
                                 CheckpointKey("t", "k", restart=1))
    loaded = store.load()
    # The run compares the version with the source's and starts over on a mismatch.
    assert loaded is not None and loaded.source_version == "v2"
