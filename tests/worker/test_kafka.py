"""The worker against the real broker: every row lands, bad rows are accounted, crashes resume.

Each test uses fresh topics (``new_topic``) and reads them back (``consume_all``) to check both
counts and content. Files are small: these tests are about behaviour, not speed.
"""

from __future__ import annotations

import codecs
import collections
import csv
import gzip
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, Message

from ingest_worker import FileCheckpointStore, IngestResult, MemoryCheckpointStore, run_ingestion
from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.checkpoint import Checkpoint, Counters

ROOT = Path(__file__).resolve().parents[2]


def make_spec(path: Path | str, topic: str, bootstrap: str, **over: Any) -> CsvIngestionSpec:
    raw: dict[str, Any] = {
        "source": {"url": str(path)},
        "kafka": {"bootstrapServers": bootstrap, "topic": topic},
    }
    for key, value in over.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    return CsvIngestionSpec.model_validate(raw)


def values(msgs: list[Message]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value() or b"") for m in msgs]


def strip_meta(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def key_of(row: dict[str, Any]) -> str:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()


def reference(
    text: str, delimiter: str = ",", names: list[str] | None = None
) -> list[dict[str, str]]:
    """What Python's csv module reads: the expected rows."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = [r for r in reader if r]
    if names is None:
        names, rows = rows[0], rows[1:]
    return [dict(zip(names, r, strict=True)) for r in rows]


QUOTED = 'id,text,n\n1,"a, b",x\n2,"say ""hi""",y\n3,"two\nlines",z\n4,"",\n5,plain,"q,""r"""\n'

CASES: dict[str, tuple[bytes, dict[str, Any], Callable[[], list[dict[str, str]]]]] = {
    "header": (
        b"id,name,city\n1,ann,paris\n2,bob,rome\n3,cy,oslo\n",
        {},
        lambda: reference("id,name,city\n1,ann,paris\n2,bob,rome\n3,cy,oslo\n"),
    ),
    "no_header_with_names": (
        b"1,ann\n2,bob\n",
        {"format__header": False, "format__columns": ["id", "name"]},
        lambda: reference("1,ann\n2,bob\n", names=["id", "name"]),
    ),
    "semicolon": (
        b"id;name;note\n1;ann;a,b\n2;bob;c\n",
        {"format__delimiter": ";"},
        lambda: reference("id;name;note\n1;ann;a,b\n2;bob;c\n", delimiter=";"),
    ),
    "quoted": (QUOTED.encode(), {}, lambda: reference(QUOTED)),
    "crlf": (
        b'id,name\r\n1,ann\r\n2,"b\r\nob"\r\n',
        {},
        lambda: reference('id,name\r\n1,ann\r\n2,"b\r\nob"\r\n'),
    ),
    "bom": (
        codecs.BOM_UTF8 + "id,name\n1,zoë\n2,łukasz\n".encode(),
        {},
        lambda: reference("id,name\n1,zoë\n2,łukasz\n"),
    ),
    "empty": (b"", {}, lambda: []),
    "header_only": (b"id,name\n", {}, lambda: []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_row_lands_exactly_once(
    case: str, tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    data, over, expected_fn = CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(data)
    topic = new_topic()
    result = run_ingestion(make_spec(path, topic, kafka_bootstrap, **over), MemoryCheckpointStore())
    assert result.completed, result.message
    expected = expected_fn()
    assert result.counters.rows_read == len(expected)
    assert result.counters.rows_published == len(expected)
    msgs = consume_all(topic, len(expected), timeout=10 if expected else 2)
    got = values(msgs)
    assert sorted(map(key_of, strip_meta(got))) == sorted(map(key_of, expected))
    assert len({r["_id"] for r in got}) == len(got)  # ids are unique
    assert not any("_source" in r or "_line" in r for r in got)  # metadata is opt-in


def test_gzip_file_and_keys_and_types(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    rows = [f"{i},name {i},{i * 1.5},{'true' if i % 2 else 'false'}\n" for i in range(5000)]
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(("id,name,score,flag\n" + "".join(rows)).encode()))
    topic = new_topic()
    spec = make_spec(path, topic, kafka_bootstrap, kafka__keyColumns=["id"],
                     format__columnTypes={"id": "int", "score": "float", "flag": "bool"},
                     checkpoint__everyRows=1000, kafka__includeMetadata=True)
    store = MemoryCheckpointStore()
    result = run_ingestion(spec, store)
    assert result.completed, result.message
    assert result.counters.rows_published == 5000
    assert len(store.saves) >= 2  # saved along the way, not only at the end
    msgs = consume_all(topic, 5000)
    assert len(msgs) == 5000
    for m in msgs:
        v = orjson.loads(m.value() or b"")
        assert m.key() == str(v["id"]).encode()
        assert v["score"] == v["id"] * 1.5
        assert v["flag"] is bool(v["id"] % 2)
        assert v["_line"] == v["id"] + 2


@pytest.mark.parametrize("partitioner", ["murmur2_random", "consistent_random", "random"])
def test_keys_land_in_the_partition_librdkafka_would_choose(
    partitioner: str, tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """The worker partitions keyed rows itself (one batch per partition): the same partition
    as librdkafka's partitioner of that name puts the key in, checked by producing the same keys
    through confluent-kafka to a topic of the same size."""
    rnd = random.Random(7)
    keys = [f"k{i}" for i in range(300)] + ["é中", "x" * 77, "a|b"] + [
        "".join(rnd.choice("abcdefghij0123456789") for _ in range(rnd.randint(1, 24)))
        for _ in range(300)
    ]
    rows = [(k, i) for i, k in enumerate(keys)] + [("", 10_000), ("", 10_001)]  # keyless too
    path = tmp_path / "keys.csv"
    path.write_text("k,n\n" + "".join(f"{k},{n}\n" for k, n in rows), encoding="utf-8")
    ours, theirs = new_topic(partitions=7), new_topic(partitions=7)
    spec = make_spec(path, ours, kafka_bootstrap, kafka__keyColumns=["k"],
                     kafka__producerProperties={"partitioner": partitioner})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    got = consume_all(ours, len(rows))
    assert sorted(orjson.loads(m.value() or b"")["n"] for m in got) == sorted(
        str(n) for _, n in rows)
    assert sum(m.key() is None for m in got) == 2  # an empty key is sent as null
    placed = {(m.key() or b"").decode(): m.partition() for m in got if m.key() is not None}
    assert len(set(placed.values())) == 7
    if partitioner == "random":
        return  # nothing to compare: librdkafka's own partitioner placed them
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": partitioner})
    for k in keys:
        producer.produce(theirs, b"", k.encode())
    assert producer.flush(30) == 0
    reference_placed = {(m.key() or b"").decode(): m.partition()
                        for m in consume_all(theirs, len(keys))}
    assert placed == reference_placed


def test_bad_rows_are_counted_logged_and_dead_lettered(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"id,name,n\n"
        b"1,a,1\n"
        b"2,b\n"  # line 3: wrong field count
        b"3,c,notanint\n"  # line 4: bad type
        b"4,\xff\xfe,4\n"  # line 5: invalid UTF-8
        b"5,e,5\n"
        b'6,"f,6\n7,g,7\n'  # line 7: unterminated quote at EOF
    )
    topic, dlq = new_topic(), new_topic(partitions=1)
    errors_log = tmp_path / "errors.jsonl"
    spec = make_spec(path, topic, kafka_bootstrap, kafka__deadLetterTopic=dlq,
                     format__columnTypes={"n": "int"})
    with errors_log.open("w") as f:
        result = run_ingestion(spec, MemoryCheckpointStore(), errors_log=f)
    assert result.completed, result.message
    c = result.counters
    assert (c.rows_read, c.rows_published, c.rows_failed) == (6, 2, 4)
    good = values(consume_all(topic, 2))
    assert sorted(r["id"] for r in good) == ["1", "5"]
    logged = [orjson.loads(line) for line in errors_log.read_text().splitlines()]
    assert [e["line"] for e in logged] == [3, 4, 5, 7]
    assert "fields" in logged[0]["reason"] and "int" in logged[1]["reason"]
    assert "utf-8" in logged[2]["reason"] and "unterminated" in logged[3]["reason"]
    dead = consume_all(dlq, 4)
    assert len(dead) == 4
    by_line = {dict(m.headers() or [])["line"]: m for m in dead}
    assert set(by_line) == {b"3", b"4", b"5", b"7"}
    assert by_line[b"3"].value() == b"2,b"
    assert by_line[b"5"].value() == b"4,\xff\xfe,4"
    headers = dict(by_line[b"4"].headers() or [])
    assert "not an int" in str(headers["reason"])
    assert headers["source"] == str(path).encode()


def test_max_errors_fails_the_run(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,n\n" + "".join(f"{i},{'x' if i % 3 == 0 else i}\n" for i in range(300)))
    spec = make_spec(path, new_topic(), kafka_bootstrap, errors__maxErrors=10,
                     format__columnTypes={"n": "int"})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert not result.completed
    assert result.exit_code == 3
    assert "too many bad rows" in result.message


# --- crash and resume -----------------------------------------------------------------------------


def big_csv(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,name,amount,note\n")
        for i in range(rows):
            note = f'"multi\nline {i}"' if i % 97 == 0 else f"note {i}"
            f.write(f"{i},name-{i},{i * 0.25},{note}\n")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingest_worker", "run", *args]


def test_sigkill_then_resume_delivers_every_row(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    seed = int(os.environ.get("CSVKAFKA_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed={seed} (set CSVKAFKA_TEST_SEED to replay)")
    rng = random.Random(seed)
    rows, every = 200_000, 20_000
    path = tmp_path / "big.csv"
    big_csv(path, rows)
    topic = new_topic()
    ckpt = tmp_path / "ckpt.json"
    args = cli(str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap,
               "--checkpoint", str(ckpt), "--checkpoint-rows", str(every),
               "--checkpoint-seconds", "1", "--key", "id")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill once the first checkpoint exists, plus a random delay: mid-stream, not at the start.
    deadline = time.monotonic() + 30
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.5))
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = FileCheckpointStore(ckpt).load()
    assert before is not None
    print(f"killed={killed} at checkpoint row {before.row}")
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "rows read 200000" in second.stdout
    after = FileCheckpointStore(ckpt).load()
    assert after is not None and after.done and after.row == rows
    msgs = consume_all(topic, rows, timeout=30)
    ids = collections.Counter(orjson.loads(m.value() or b"")["id"] for m in msgs)
    assert set(ids) == {str(i) for i in range(rows)}  # every row at least once
    duplicates = sum(ids.values()) - rows
    print(f"duplicates={duplicates}")
    assert duplicates <= every
    # The event id makes duplicates recognisable: one id per row, whatever the run.
    by_row = collections.defaultdict(set)
    for m in msgs:
        v = orjson.loads(m.value() or b"")
        by_row[v["id"]].add(v["_id"])
    assert all(len(s) == 1 for s in by_row.values())


def test_resume_skips_what_the_checkpoint_covers(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    for suffix in ("csv", "csv.gz"):
        path = tmp_path / f"r.{suffix}"
        text = "id,v\n" + "".join(f"{i},{i}\n" for i in range(100))
        data = text.encode()
        path.write_bytes(gzip.compress(data) if suffix.endswith("gz") else data)
        offset = data.index(b"\n60,60\n") + 1  # the record of row 60
        topic = new_topic()
        spec = make_spec(path, topic, kafka_bootstrap, kafka__includeMetadata=True)
        probe_spec = make_spec(path, new_topic(), kafka_bootstrap)
        probe = run_ingestion(probe_spec, MemoryCheckpointStore())
        assert probe.checkpoint is not None
        version = probe.checkpoint.source_version
        counters = Counters(rows_read=60, rows_published=60)
        store = MemoryCheckpointStore(Checkpoint(offset, 60, 62, str(path), version, counters))
        result = run_ingestion(spec, store)
        assert result.completed, result.message
        assert result.counters.rows_read == 100  # counters continue from the checkpoint's
        assert result.counters.bytes_read == len(data)
        got = values(consume_all(topic, 40))
        assert sorted(int(r["id"]) for r in got) == list(range(60, 100))
        assert sorted(r["_line"] for r in got) == list(range(62, 102))


def test_changed_source_fails_by_default(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id\n1\n")
    store = MemoryCheckpointStore(Checkpoint(3, 0, 2, str(path), "size=1,mtime_ns=1"))
    result = run_ingestion(make_spec(path, new_topic(), kafka_bootstrap), store)
    assert not result.completed
    assert "changed" in result.message


# --- broker outages -------------------------------------------------------------------------------


def _first_checkpoint_hook(action: Callable[[], None]) -> Callable[[Checkpoint], None]:
    fired = threading.Event()

    def hook(cp: Checkpoint) -> None:
        if not fired.is_set():
            fired.set()
            action()

    return hook


@pytest.mark.slow
def test_broker_outage_of_20s_is_survived(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]], kafka_control: Any,
) -> None:
    rows = 100_000
    path = tmp_path / "o.csv"
    big_csv(path, rows)
    topic = new_topic()

    def outage() -> None:
        kafka_control.stop()
        threading.Timer(20, kafka_control.start).start()

    spec = make_spec(path, topic, kafka_bootstrap, checkpoint__everyRows=5000,
                     kafka__retryBudgetSeconds=120)
    started = time.monotonic()
    from ingest_worker.metrics import Metrics

    metrics = Metrics()
    result = run_ingestion(spec, MemoryCheckpointStore(), reporter=_first_checkpoint_hook(outage),
                           metrics=metrics)
    assert result.completed, result.message
    assert time.monotonic() - started >= 15  # it did wait for the broker
    # The outage is Kafka retry time: from the first error to the acknowledgement after it.
    retry = metrics.registry.get_sample_value("ingest_csv_kafka_retry_seconds_total") or 0
    assert 10 <= retry <= 2 * 40, retry  # summed over the 2 workers' producers
    msgs = consume_all(topic, rows, timeout=60)
    ids = {orjson.loads(m.value() or b"")["id"] for m in msgs}
    assert ids == {str(i) for i in range(rows)}


@pytest.mark.slow
def test_broker_gone_past_the_budget_fails_with_a_safe_checkpoint(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]], kafka_control: Any,
) -> None:
    rows = 100_000
    path = tmp_path / "g.csv"
    big_csv(path, rows)
    topic = new_topic()
    store = FileCheckpointStore(tmp_path / "ck.json")
    spec = make_spec(path, topic, kafka_bootstrap, checkpoint__everyRows=5000,
                     kafka__retryBudgetSeconds=8)
    result: IngestResult = run_ingestion(
        spec, store, reporter=_first_checkpoint_hook(kafka_control.stop)
    )
    assert not result.completed
    assert result.exit_code != 0
    assert "Kafka unavailable" in result.message
    cp = store.load()
    assert cp is not None and not cp.done and 0 < cp.row < rows
    kafka_control.start()
    # Every row before the checkpoint is in the topic: it never passed an unacknowledged row.
    deadline = time.monotonic() + 90
    while True:  # a restarted broker takes a moment to lead its partitions again
        try:
            msgs = consume_all(topic, cp.row, timeout=60)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    ids = {int(orjson.loads(m.value() or b"")["id"]) for m in msgs}
    assert set(range(cp.row)) <= ids


# --- the command line and the metrics -------------------------------------------------------------


def test_cli_prints_a_summary_and_exits_0(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,name\n1,a\n2,b\n3,c\n")
    topic = new_topic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        cli(str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--key", "id",
            "--checkpoint", str(tmp_path / "ck.json")),
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()
    assert len(summary) == 1
    assert "rows read 3, published 3, failed 0, duration" in summary[0]
    # Logs are JSON, one object per line, with the RFC's messages.
    logs = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in logs]
    assert f"Started processing file {path}" in messages
    assert any(m.startswith(f"Finished file {path} (Duration: ") and m.endswith("Rows: 3)")
               for m in messages)
    assert sorted(m.key() or b"" for m in consume_all(topic, 3)) == [b"1", b"2", b"3"]
    # A second run with the same checkpoint has nothing left to do.
    again = subprocess.run(
        cli(str(path), "--topic", topic, "--bootstrap-servers", kafka_bootstrap,
            "--checkpoint", str(tmp_path / "ck.json")),
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0 and "already complete" in again.stdout


def test_cli_fails_clearly_on_a_missing_file(tmp_path: Path, kafka_bootstrap: str) -> None:
    proc = subprocess.run(
        cli(str(tmp_path / "nope.csv"), "--topic", "t", "--bootstrap-servers", kafka_bootstrap),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "source not found" in proc.stderr


def test_metrics_count_rows_by_status(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    from ingest_worker.metrics import Metrics

    path = tmp_path / "m.csv"
    path.write_text("id,n\n1,1\n2,x\n3,3\n")
    metrics = Metrics()
    spec = make_spec(path, new_topic(), kafka_bootstrap, format__columnTypes={"n": "int"})
    assert run_ingestion(spec, MemoryCheckpointStore(), metrics=metrics).completed
    value = metrics.registry.get_sample_value
    assert value("ingest_csv_lines_total", {"status": "read"}) == 3
    assert value("ingest_csv_lines_total", {"status": "processed"}) == 2
    assert value("ingest_csv_lines_total", {"status": "error"}) == 1
    assert value("csv_processing_errors_total") == 1
    assert value("ingest_csv_current_offset") == path.stat().st_size
    assert value("ingest_csv_bytes_total") == path.stat().st_size
    assert value("ingest_csv_bytes_read_total") == path.stat().st_size - len("id,n\n")
    assert value("ingest_csv_duration_seconds_count") == 1
    # Beyond the RFC's: nothing past the last checkpoint, and no Kafka fault.
    assert value("ingest_csv_checkpoint_lag_rows") == 0
    assert value("ingest_csv_kafka_retry_seconds_total") == 0
