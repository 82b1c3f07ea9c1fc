"""The verifier over a whole ingestion: many files into one topic, checked file by file.

Against the real broker: the real worker ingests each file of a small folder into one topic
(as the units of a run of many files do), then the verifier reads the topic once and says, per
file, what is lost or changed, and, overall, what belongs to no file.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message, Producer

from ingest_worker import MemoryCheckpointStore, run_ingestion
from ingest_worker.kafka import deadletter
from ingest_worker.verify import (
    SourceFile,
    id_prefix_for,
    ingestion_files,
    local_version,
    main,
    verify_files,
    verify_many,
)
from tests.worker.test_kafka import make_spec


@dataclass
class Ingested:
    root: Path
    topic: str
    dlq: str
    files: list[SourceFile]
    rows_failed: int

    def prefix_of(self, name: str) -> str:
        """The event-id prefix of a file's messages, with the dash."""
        [f] = [f for f in self.files if f.url == self.url(name)]
        return id_prefix_for(f.url, f.version) + "-"

    def url(self, name: str) -> str:
        return str(self.root / name)


def _rows(first: int, n: int) -> bytes:
    return b"".join(b"%d,name %d,%d.5\n" % (i, i, i) for i in range(first, first + n))


# Three files, one compressed, one in a subfolder with a bad row (too many fields).
FILES = {
    "2026-01.csv": b"id,name,score\n" + _rows(0, 1000),
    "2026-02.csv.gz": gzip.compress(b"id,name,score\n" + _rows(1000, 1000)),
    "old/2025-12.csv": b"id,name,score\n" + _rows(2000, 300) + b"x,y,z,extra\n" + _rows(2300, 200),
}
GOOD_ROWS = 2500


@pytest.fixture
def ingested(tmp_path: Path, kafka_bootstrap: str, new_topic: Callable[..., str]) -> Ingested:
    root = tmp_path / "exports"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    topic, dlq = new_topic(), new_topic(partitions=1)
    failed = 0
    for name in FILES:  # one run per file, as one pod per unit
        spec = make_spec(root / name, topic, kafka_bootstrap, kafka__deadLetterTopic=dlq)
        result = run_ingestion(spec, MemoryCheckpointStore())
        assert result.completed, result.message
        failed += result.counters.rows_failed
    return Ingested(root, topic, dlq, ingestion_files(f"{root}/"), failed)


def _id(m: Message) -> str:
    event_id: str = orjson.loads(m.value() or b"")["_id"]
    return event_id


Headers = list[tuple[str, str | bytes | None]]


def _produce(bootstrap: str, topic: str, *records: tuple[bytes, Headers]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value, headers in records:
        producer.produce(topic, value, headers=headers)
    assert producer.flush(30) == 0


def test_a_whole_ingestion_checks_out_file_by_file(
    ingested: Ingested, kafka_bootstrap: str
) -> None:
    assert [f.url for f in ingested.files] == sorted(ingested.url(n) for n in FILES)
    report = verify_many(ingested.files, ingested.topic, kafka_bootstrap,
                         dead_letter_topic=ingested.dlq, reported_bad=ingested.rows_failed)
    assert report.ok, report.summary()
    assert (report.rows_expected, report.rows_present, report.messages) == (GOOD_ROWS,) * 3
    assert (report.bad_expected, report.bad_reported, report.dlq_messages) == (1, 1, 1)
    assert report.foreign_messages == report.dlq_foreign == report.rows_unexpected == 0
    by_url = {f.source: f for f in report.files}
    assert [by_url[ingested.url(n)].rows_present for n in FILES] == [1000, 1000, 500]
    assert by_url[ingested.url("old/2025-12.csv")].bad_expected == 1
    assert all(f.ok for f in report.files)
    d = report.as_dict()
    assert d["ok"] and [f["ok"] for f in d["files"]] == [True] * 3


def test_lost_and_changed_rows_are_named_by_their_file(
    ingested: Ingested, kafka_bootstrap: str, consume_all: Callable[..., list[Message]]
) -> None:
    # A redelivery of a row of one file with other content: that row is not what it was.
    first = ingested.prefix_of("2026-01.csv")
    changed = next(m for m in consume_all(ingested.topic, GOOD_ROWS) if _id(m).startswith(first))
    value = {**orjson.loads(changed.value() or b""), "name": "other"}
    _produce(kafka_bootstrap, ingested.topic, (orjson.dumps(value), []))
    # And 25 rows of another file that never made it.
    lost, kept, dropped = ingested.prefix_of("2026-02.csv.gz"), [], 0
    for m in consume_all(ingested.topic, GOOD_ROWS + 1):
        if dropped < 25 and _id(m).startswith(lost):
            dropped += 1
        else:
            kept.append(m)
    report = verify_files(ingested.files, kept)
    assert not report.ok
    assert (report.rows_missing, report.rows_mismatched, report.lost) == (25, 1, 26)
    failing = {f.source: f for f in report.failing_files}
    assert set(failing) == {ingested.url("2026-02.csv.gz"), ingested.url("2026-01.csv")}
    gz = failing[ingested.url("2026-02.csv.gz")]
    assert (gz.rows_missing, gz.rows_present, len(gz.missing_examples)) == (25, 975, 10)
    assert failing[ingested.url("2026-01.csv")].rows_mismatched == 1
    text = report.summary()
    assert f"{ingested.url('2026-02.csv.gz')}: FAILED: 975/1000 rows present, missing 25" in text
    assert "files 3 (2 failing)" in text


def test_duplicates_are_counted_and_foreign_messages_fail(
    ingested: Ingested, kafka_bootstrap: str, consume_all: Callable[..., list[Message]]
) -> None:
    again = consume_all(ingested.topic, GOOD_ROWS)[:3]
    _produce(kafka_bootstrap, ingested.topic, *((m.value() or b"", []) for m in again))
    report = verify_many(ingested.files, ingested.topic, kafka_bootstrap)
    assert report.ok and report.duplicates == 3 and report.messages == GOOD_ROWS + 3, \
        report.summary()

    bad_row = ingested.prefix_of("old/2025-12.csv") + str(FILES["old/2025-12.csv"].index(b"x,"))
    _produce(kafka_bootstrap, ingested.topic,
             (orjson.dumps({"_id": "0123456789abcdef-14", "id": "1"}), []),  # no file's id
             (b"not json", []),
             (orjson.dumps({"_id": bad_row, "id": "x"}), []))  # a bad row, published
    report = verify_many(ingested.files, ingested.topic, kafka_bootstrap)
    assert not report.ok and report.lost == 0 and report.duplicates == 3
    assert (report.foreign_messages, report.rows_unexpected) == (2, 3)
    [old] = report.failing_files
    assert old.source == ingested.url("old/2025-12.csv") and old.rows_unexpected == 1
    assert any("0123456789abcdef" in ex for ex in report.foreign_examples)
    assert "messages of no file 2" in report.summary()


def test_dead_letters_are_accounted_across_files(
    ingested: Ingested, kafka_bootstrap: str
) -> None:
    _produce(kafka_bootstrap, ingested.dlq,
             (b"1,2", [(deadletter.SOURCE, b"/elsewhere/x.csv"), (deadletter.OFFSET, b"4")]))
    report = verify_many(ingested.files, ingested.topic, kafka_bootstrap,
                         dead_letter_topic=ingested.dlq, reported_bad=ingested.rows_failed)
    assert not report.ok and report.lost == 0
    assert (report.dlq_messages, report.dlq_foreign, report.dlq_unexpected) == (2, 1, 1)
    assert report.failing_files == []  # the file's own dead letter is where it should be
    assert "/elsewhere/x.csv" in report.summary()


def test_the_command_on_a_folder_and_a_glob(
    ingested: Ingested, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--topic", ingested.topic, "--bootstrap-servers", kafka_bootstrap,
              "--dead-letter-topic", ingested.dlq, "--json"]
    assert main([f"{ingested.root}/", *common, "--reported-bad", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["rows_present"] == GOOD_ROWS and len(out["files"]) == 3

    # The glob does not cross folders: the old file's rows and dead letter are foreign here.
    assert main([f"{ingested.root}/2026-*", *common]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [f["source"] for f in out["files"]] == [
        ingested.url("2026-01.csv"), ingested.url("2026-02.csv.gz")]
    assert all(f["ok"] for f in out["files"])
    assert (out["foreign_messages"], out["dlq_foreign"]) == (500, 1)

    # A copy of the files (same sizes and mtimes) checked as the ingestion named them.
    copy = shutil.copytree(ingested.root, ingested.root.parent / "copy")
    assert main([f"{copy}/", "--source-url", f"{ingested.root}/", *common]) == 0, \
        capsys.readouterr().out

    assert main([str(ingested.root), *common]) == 2  # a folder names no file without its "/"
    assert "end it with /" in capsys.readouterr().err


def test_a_file_gone_since_the_listing_fails_alone(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"id\n1\n")
    [a] = ingestion_files(f"{tmp_path}/")
    assert a.version == local_version(a.url)  # what the worker's probe of it finds
    gone = SourceFile(str(tmp_path / "b.csv"), version="size=5,mtime_ns=1")
    report = verify_files([a, gone], [])
    assert [f.source_error is not None for f in report.files] == [False, True]
    assert not report.ok and "1 of 2 files could not be read" in (report.source_error or "")
    with pytest.raises(ValueError, match="neither a version nor an id prefix"):
        verify_files([SourceFile("x.csv"), SourceFile("y.csv")], [])
