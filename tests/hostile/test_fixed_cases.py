"""Fixed hostile inputs, each run through ``csv-ingest`` as a child process against the real broker.

Every case must end in a clear outcome: rows (checked by the independent verifier), counted bad
rows (in the dead-letter topic, exactly), or a non-zero exit with a reason. None may hang (a wall
clock limit per run) or exhaust memory (peak RSS of the worker's largest process measured).
Outcomes are appended to ``.testenv/hostile-report.txt`` for the report.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ingest_worker.verify import CsvFormat, VerifyReport, verify
from tests.conftest import unique_name
from tests.hostile.conftest import WorkerRun, run_worker

MEMORY_BOUND_MIB = 1024


def record(case: str, run: WorkerRun, report: VerifyReport | None, outcome: str) -> None:
    path = Path(os.environ.get("CSVKAFKA_TESTENV", ".testenv")) / "hostile-report.txt"
    rep = "" if report is None else (
        f" | rows {report.rows_present}/{report.rows_expected}, bad {report.bad_expected}, "
        f"lost {report.lost}, foreign {report.rows_unexpected}, dup {report.duplicates}"
    )
    with path.open("a") as f:
        f.write(
            f"{time.strftime('%F %T')} {case}: exit {run.returncode} in {run.seconds:.1f}s, "
            f"peak RSS {run.peak_rss_mib:.0f} MiB | {outcome}{rep}\n"
        )
    print(f"{case}: exit {run.returncode}, {run.seconds:.1f}s, {run.peak_rss_mib:.0f} MiB, "
          f"{outcome}{rep}")


def _rows_file(path: Path, rows: int, start: int = 0) -> Path:
    with path.open("w") as f:
        f.write("id,name,amount\n")
        for i in range(start, start + rows):
            f.write(f"{i},name-{i},{i % 1000}.5\n")
    return path


def _assert_clean(report: VerifyReport) -> None:
    assert report.ok, report.summary()


# --- bytes a text parser chokes on --------------------------------------------------------------


def test_nul_bytes(tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    path = tmp_path / "nul.csv"
    lines = [b"id,text"] + [
        f"{i},a\x00b{i}".encode() if i % 3 else f'{i},"\x00\x00"'.encode() for i in range(1000)
    ]
    lines.insert(500, b"\x00\x00\x00")  # a line of NULs alone: one field (of two), a bad row
    path.write_bytes(b"\n".join(lines) + b"\n")
    topic, dlq = new_topic(partitions=2), new_topic(partitions=1, prefix="dlq")
    run = run_worker(path, topic, kafka_bootstrap, "--dead-letter-topic", dlq, timeout=120)
    assert run.returncode == 0, run.stderr
    report = verify(str(path), topic, kafka_bootstrap, dead_letter_topic=dlq, timeout=30)
    record("NUL bytes", run, report, "rows; NUL kept as data; the NUL-only line a bad row")
    _assert_clean(report)
    assert report.rows_expected == 1000 and report.bad_expected == 1


def test_invalid_utf8_in_the_middle(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    path = _rows_file(tmp_path / "utf.csv", 0)
    with path.open("ab") as f:
        for i in range(20_000):
            f.write(f"{i},name-{i},{i}.5\n".encode() if i != 10_000 else b"10000,bad\xff\xfe,1\n")
    topic, dlq = new_topic(partitions=3), new_topic(partitions=1, prefix="dlq")
    run = run_worker(path, topic, kafka_bootstrap, "--dead-letter-topic", dlq, timeout=120)
    assert run.returncode == 0, run.stderr
    report = verify(str(path), topic, kafka_bootstrap, dead_letter_topic=dlq, timeout=30)
    record("invalid UTF-8 mid-file", run, report, "rows; the one bad row in the DLQ")
    _assert_clean(report)
    assert report.bad_expected == 1 and report.dlq_messages == 1
    assert "invalid" in run.stdout + run.stderr or report.dlq_messages == 1


def test_duplicate_header_names(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("id,name,id\n1,a,2\n3,b,4\n")
    topic = new_topic(partitions=1)
    run = run_worker(path, topic, kafka_bootstrap, timeout=60)
    record("duplicate header names", run, None, f"refused: {run.reason}")
    assert run.returncode != 0
    assert "duplicate column names: id" in run.stderr, run.stderr
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    del admin  # nothing to read: the topic must stay empty
    from tests.conftest import consume_topic

    assert consume_topic(kafka_bootstrap, topic, 0, timeout=5) == []


def test_ten_million_empty_lines(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    path = tmp_path / "empty.csv"
    with path.open("wb") as f:
        f.write(b"id,name\n1,first\n")
        block = b"\n" * 1_000_000
        for _ in range(10):
            f.write(block)
        f.write(b"2,last\n")
    topic = new_topic(partitions=1)
    run = run_worker(path, topic, kafka_bootstrap, timeout=300)
    assert run.returncode == 0, run.stderr
    report = verify(str(path), topic, kafka_bootstrap, timeout=30)
    record("ten million empty lines", run, report, "2 rows, blank lines skipped")
    _assert_clean(report)
    assert report.rows_expected == 2 and report.rows_present == 2
    assert run.peak_rss_mib < MEMORY_BOUND_MIB


# --- sizes beyond every buffer ------------------------------------------------------------------


def _big_topic(kafka_bootstrap: str, max_bytes: int) -> str:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = unique_name("big")
    fut = admin.create_topics(
        [NewTopic(name, 1, 1, config={"max.message.bytes": str(max_bytes)})]
    )
    fut[name].result(timeout=60)
    time.sleep(0.5)
    return name


def test_line_longer_than_any_buffer(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A 9 MB row (the worker reads 4 MB blocks and cuts 4 MB chunks), with quoted newlines, in
    the middle of ordinary rows: it lands whole, when the topic accepts messages that big."""
    path = _rows_file(tmp_path / "long.csv", 5000)
    with path.open("a") as f:
        f.write('5000,"' + ("x" * 1000 + "\n") * 9000 + '",1.5\n')
    with path.open("a") as f:
        for i in range(5001, 10_000):
            f.write(f"{i},name-{i},{i}.5\n")
    topic = _big_topic(kafka_bootstrap, 32 * 1024 * 1024)
    run = run_worker(path, topic, kafka_bootstrap,
                     "--producer-property", "message.max.bytes=30000000", timeout=180)
    assert run.returncode == 0, run.stderr
    report = verify(str(path), topic, kafka_bootstrap, timeout=60)
    record("line longer than any buffer (9 MB)", run, report, "rows, the long one intact")
    _assert_clean(report)
    assert report.rows_expected == 10_000
    assert run.peak_rss_mib < MEMORY_BOUND_MIB


@pytest.mark.slow
def test_100mb_single_line(tmp_path: Path, kafka_bootstrap: str) -> None:
    """One 100 MB line (the whole data of the file, no newline in it). No Kafka message can be
    that big by default, and it is above the worker's record limit: the outcome must be a clear
    failure naming the line (or a counted bad row), in bounded memory and time."""
    path = tmp_path / "huge.csv"
    with path.open("wb") as f:
        f.write(b"id,blob\n1,")
        chunk = b"y" * (1024 * 1024)
        for _ in range(100):
            f.write(chunk)
    topic = new_plain_topic(kafka_bootstrap)
    cp = tmp_path / "cp.json"
    run = run_worker(path, topic, kafka_bootstrap, checkpoint=cp, timeout=300)
    report = verify(str(path), topic, kafka_bootstrap, timeout=30)
    bad = (run.checkpoint or {}).get("checkpoint", {}).get("counters", {}).get("rowsFailed", 0)
    if run.returncode == 0:
        outcome = f"completed with {bad} bad row(s)"
        assert bad == 1, f"exit 0 but the row is neither published nor counted: {run.stdout}"
    else:
        outcome = f"failed: {run.reason}"
        assert "line 2" in run.stderr or "longer than" in run.stderr, run.stderr
    record("100 MB single line", run, report, outcome)
    assert report.rows_unexpected == 0 and report.rows_mismatched == 0, report.summary()
    assert run.peak_rss_mib < MEMORY_BOUND_MIB, f"peak RSS {run.peak_rss_mib:.0f} MiB"


def new_plain_topic(kafka_bootstrap: str) -> str:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = unique_name("t")
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=60)
    time.sleep(0.5)
    return name


# --- broken and moving sources ------------------------------------------------------------------


def test_truncated_gzip(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """A gzip cut in half: the worker must fail with a reason (never call a truncated file
    complete), and what it published must all be true rows of the file."""
    plain = _rows_file(tmp_path / "full.csv", 200_000)
    data = gzip.compress(plain.read_bytes())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    topic = new_topic(partitions=2)
    run = run_worker(path, topic, kafka_bootstrap, timeout=120)
    report = verify(str(path), topic, kafka_bootstrap, timeout=30)
    record("truncated gzip", run, report, f"exit {run.returncode}: {run.reason}")
    assert run.returncode != 0, f"a truncated gzip was reported complete: {run.stdout}"
    assert "end-of-stream" in run.stderr or "truncated" in run.stderr.lower() or \
        "Compressed file ended" in run.stderr, run.stderr
    assert report.source_error is not None  # the verifier agrees the file is cut
    assert report.rows_unexpected == 0 and report.rows_mismatched == 0, report.summary()


def test_file_growing_while_read(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """Rows appended (half a line at a time) while the worker reads. Any clear outcome will do
    (the rows of a snapshot, all rows, or a 'source changed' failure) but never a torn row."""
    path = _rows_file(tmp_path / "grow.csv", 300_000)
    topic = new_topic(partitions=3)
    done = threading.Event()

    def grow() -> None:
        i = 300_000
        with path.open("a") as f:
            while not done.is_set() and i < 400_000:
                line = f"{i},name-{i},{i % 1000}.5\n"
                f.write(line[:5])
                f.flush()
                time.sleep(0.0005)
                f.write(line[5:])
                f.flush()
                i += 1

    t = threading.Thread(target=grow, daemon=True)
    t.start()
    cp = tmp_path / "grow-cp.json"
    try:
        run = run_worker(path, topic, kafka_bootstrap, checkpoint=cp, timeout=180)
    finally:
        done.set()
        t.join()
    report = verify(str(path), topic, kafka_bootstrap, timeout=30,
                    id_prefix=_prefix_of(kafka_bootstrap, topic))
    record("file growing while read", run, report, f"exit {run.returncode} {run.reason}")
    assert report.rows_unexpected == 0 and report.rows_mismatched == 0, report.summary()
    if run.returncode == 0:
        assert report.rows_present >= 300_000, report.summary()
        # Every line of this file is a good row: a half-written last line read as a bad row
        # means the worker read past the snapshot it versioned (size and mtime at the start).
        failed = (run.checkpoint or {}).get("checkpoint", {}).get("counters", {})
        assert failed.get("rowsFailed", 0) == 0, f"torn row counted as bad: {run.stderr[-600:]}"


def _prefix_of(bootstrap: str, topic: str) -> str | None:
    """The id prefix the worker used (the file's version changed under it while growing)."""
    import json

    from tests.conftest import consume_topic

    msgs = consume_topic(bootstrap, topic, 0, timeout=5)
    return json.loads(msgs[0].value())["_id"].rpartition("-")[0] if msgs else None


# --- dialect corners where engines disagree -----------------------------------------------------


def test_bare_carriage_return_in_unquoted_field(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """A lone CR inside an unquoted field: Python's csv rejects that record ("new-line character
    seen in unquoted field"), so it must be a bad row, whichever engine parses the chunk."""
    path = tmp_path / "cr.csv"
    path.write_bytes(b"a,b\n1,x\ry\n2,z\n")
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1, prefix="dlq")
    run = run_worker(path, topic, kafka_bootstrap, "--dead-letter-topic", dlq, timeout=60)
    report = verify(str(path), topic, kafka_bootstrap, dead_letter_topic=dlq, timeout=20)
    record("bare CR in an unquoted field", run, report, f"exit {run.returncode}")
    assert run.returncode == 0, run.stderr
    _assert_clean(report)


def test_record_starting_with_bom_character_mid_file(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """U+FEFF at the start of a data row is data (only the file's first bytes are a BOM)."""
    path = tmp_path / "feff.csv"
    path.write_bytes(b"a,b\n" + "\ufeffx,y\n".encode() + b"1,2\n")
    topic = new_topic(partitions=1)
    run = run_worker(path, topic, kafka_bootstrap, timeout=60)
    report = verify(str(path), topic, kafka_bootstrap, timeout=20)
    record("U+FEFF starting a data row", run, report, f"exit {run.returncode}")
    assert run.returncode == 0, run.stderr
    _assert_clean(report)


def test_quote_inside_unquoted_field(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """``5" screen``: Python's csv reads a quote inside an unquoted field as a literal, so both
    rows are good rows; they must not be merged into one record up to the next quote."""
    path = tmp_path / "inch.csv"
    path.write_bytes(b'id,item\n1,5" screen\n2,cable\n3,plug\n')
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1, prefix="dlq")
    run = run_worker(path, topic, kafka_bootstrap, "--dead-letter-topic", dlq, timeout=60)
    report = verify(str(path), topic, kafka_bootstrap, CsvFormat(), dead_letter_topic=dlq,
                    timeout=20)
    record("quote inside an unquoted field", run, report, f"exit {run.returncode}")
    assert run.returncode == 0, run.stderr
    _assert_clean(report)


def test_long_field_next_to_a_bad_row(
    tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """A 200 KB field in the same chunk as a bad row: the chunk goes to the exact (Python csv)
    engine, whose default field limit is 128 KiB; the long row is still a good row."""
    path = tmp_path / "longfield.csv"
    path.write_bytes(b"a,b\n1," + b"z" * 200_000 + b"\n2,x,extra\n3,y\n")
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1, prefix="dlq")
    run = run_worker(path, topic, kafka_bootstrap, "--dead-letter-topic", dlq, timeout=60)
    report = verify(str(path), topic, kafka_bootstrap, dead_letter_topic=dlq, timeout=20)
    record("200 KB field next to a bad row", run, report, f"exit {run.returncode}")
    assert run.returncode == 0, run.stderr
    _assert_clean(report)
    assert report.rows_expected == 2 and report.bad_expected == 1
