"""Pure unit tests of the worker's decisions: boundaries, chunks, watermark, ids, dialect, CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.api.spec import ColumnType, CsvFormat, CsvIngestionSpec
from ingest_worker.checkpoint import (
    Checkpoint,
    ChunkDone,
    FileCheckpointStore,
    Outcome,
    Watermark,
)
from ingest_worker.cli import build_parser, spec_from_args
from ingest_worker.dialect import (
    ConversionError,
    Layout,
    convert,
    event_id,
    event_id_prefix,
    python_records,
    read_header,
)
from ingest_worker.parse import Spans, parse_chunk, parse_exact, parse_fast
from ingest_worker.pipeline import Tuning, cut_chunks, resolve_layout
from ingest_worker.scan import chunk_records, find_boundaries

# --- the boundary scan ----------------------------------------------------------------------------

# A bare CR is not a record terminator here (files end lines with LF or CRLF), so CR only
# appears as part of CRLF.
field_text = st.lists(
    st.sampled_from([*'ab ,;"\n\té€x', "\r\n"]), min_size=0, max_size=8
).map("".join)
rows_strategy = st.lists(st.lists(field_text, min_size=3, max_size=3), min_size=0, max_size=30)


def write_csv(rows: list[list[str]], delimiter: str = ",", eol: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=eol).writerows(rows)
    return out.getvalue().encode()


def python_parse(data: bytes, delimiter: str = ",") -> list[list[str]]:
    text = data.decode()
    return [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]


def nonblank(rows: list[list[str]]) -> list[list[str]]:
    # csv.writer writes [""] as '""' (not blank) and a row of one empty field the same way.
    return rows


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, eol=st.sampled_from(["\n", "\r\n"]), delim=st.sampled_from([",", ";"]))
def test_scan_agrees_with_python_csv(rows: list[list[str]], eol: str, delim: str) -> None:
    data = write_csv(rows, delim, eol)
    recs = chunk_records(data, ord('"'), ord(delim))
    expected = python_parse(data, delim)
    assert len(recs) == len(expected)
    assert recs.fields is not None
    assert recs.fields.tolist() == [len(r) for r in expected]
    assert recs.delimiters == sum(len(r) - 1 for r in expected)
    # Each record, parsed alone, is exactly the row Python's csv module sees there.
    got = [python_parse(data[s:e], delim)[0] for s, e in zip(recs.starts, recs.ends, strict=True)]
    assert got == expected
    # Lines: the physical line each record starts on.
    for s, ln in zip(recs.starts.tolist(), recs.lines.tolist(), strict=True):
        assert data[:s].count(b"\n") == ln


def test_scan_blank_lines_and_final_record_without_newline() -> None:
    data = b'a,b\n\n\r\n"x\ny",z\nlast,1'
    recs = chunk_records(data, ord('"'), ord(","))
    assert [data[s:e] for s, e in zip(recs.starts, recs.ends, strict=True)] == [
        b"a,b\n", b'"x\ny",z\n', b"last,1"
    ]
    assert recs.lines.tolist() == [0, 3, 5]
    assert not recs.open_quote


def test_scan_unterminated_quote_at_end() -> None:
    data = b'a,b\nc,"d\ne,f\n'
    recs = chunk_records(data, ord('"'), ord(","))
    assert len(recs) == 2
    assert recs.open_quote
    b = find_boundaries(data, ord('"'))
    assert b.ends.tolist() == [4]


@settings(max_examples=50, deadline=None)
@given(rows=rows_strategy, block=st.integers(1, 64), max_rows=st.integers(1, 7))
def test_cut_chunks_cover_the_file_on_record_boundaries(
    rows: list[list[str]], block: int, max_rows: int
) -> None:
    data = b"h1,h2,h3\n" + write_csv(rows)
    header = read_header(io.BytesIO(data), CsvFormat(), "utf-8")
    layout = Layout(columns=("h1", "h2", "h3"))
    start = Checkpoint(header.data_offset, 0, header.data_line, "x", None)
    tuning = Tuning(read_block_bytes=block, max_chunk_bytes=block * 2)
    stream = io.BytesIO(data)
    stream.seek(header.data_offset)
    chunks = list(cut_chunks(stream, layout, start, tuning, max_rows))
    assert b"".join(c.data for c, _ in chunks) == data[header.data_offset :]
    expected = python_parse(data)[1:]
    assert sum(c.rows for c, _ in chunks) == len(expected)
    nexts: list[Any] = [*chunks[1:], None][: len(chunks)]
    for (chunk, meta), nxt in zip(chunks, nexts, strict=True):
        assert chunk.start_line == data[: chunk.start_offset].count(b"\n") + 1
        assert meta.end_offset == chunk.start_offset + len(chunk.data)
        if isinstance(nxt, tuple):
            assert nxt[0].start_row == meta.end_row
    got = [r for c, _ in chunks for r in python_parse(c.data)]
    assert got == expected
    for chunk, _ in chunks:  # the scan the reader hands over is the one the worker would make
        own = chunk_records(chunk.data, ord('"'), ord(","), per_record_fields=False)
        if chunk.scan is None:
            continue
        handed = chunk_records(chunk.data, ord('"'), ord(","), per_record_fields=False,
                               scan=chunk.scan)
        for name in ("starts", "ends", "lines"):
            assert getattr(handed, name).tolist() == getattr(own, name).tolist()
        assert (handed.delimiters, handed.doubled_quotes, handed.open_quote) == (
            own.delimiters, b'""' in chunk.data, own.open_quote)
        assert handed.delimiters == sum(len(r) - 1 for r in python_parse(chunk.data))


# --- watermark and checkpoints --------------------------------------------------------------------


def done(seq: int, end: int, rows: int = 10) -> ChunkDone:
    return ChunkDone(seq, end, (seq + 1) * rows, (seq + 1) * rows + 2, rows, rows, 0, 100)


def test_watermark_is_contiguous_low_watermark() -> None:
    wm = Watermark(Checkpoint(0, 0, 2, "f", "v"))
    assert not wm.finish(done(1, 200))
    assert not wm.finish(done(2, 300))
    assert wm.checkpoint.byte_offset == 0  # chunk 0 not acknowledged yet
    assert wm.finish(done(0, 100))
    assert wm.checkpoint.byte_offset == 300
    assert wm.checkpoint.row == 30
    assert wm.checkpoint.counters.rows_published == 30
    with pytest.raises(ValueError):
        wm.finish(done(1, 200))


@given(order=st.permutations(list(range(12))))
def test_watermark_never_passes_an_unfinished_chunk(order: list[int]) -> None:
    wm = Watermark(Checkpoint(0, 0, 1, "f", None))
    finished: set[int] = set()
    last = 0
    for seq in order:
        wm.finish(done(seq, (seq + 1) * 100))
        finished.add(seq)
        k = wm.checkpoint.byte_offset // 100
        assert all(i in finished for i in range(k))
        assert wm.checkpoint.byte_offset >= last  # monotonic
        last = wm.checkpoint.byte_offset
    assert wm.checkpoint.byte_offset == 1200


def test_file_store_round_trip(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "sub" / "ck.json")
    assert store.load() is None
    cp = Checkpoint(123, 4, 6, "s3://b/k.csv", "etag")
    store.save(cp)
    assert store.load() == cp
    store.final(cp, Outcome(True, "ok"))
    assert json.loads((tmp_path / "sub" / "ck.json").read_text())["outcome"]["completed"]
    assert store.load() == cp
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.json"]  # no temp files left


# --- event ids ------------------------------------------------------------------------------------


def test_event_id_is_deterministic_and_depends_on_identity_and_offset() -> None:
    p = event_id_prefix("s3://b/k.csv", "v1")
    assert p == event_id_prefix("s3://b/k.csv", "v1")
    assert p != event_id_prefix("s3://b/k.csv", "v2")
    assert p != event_id_prefix("s3://b/other.csv", "v1")
    assert event_id(p, 10) != event_id(p, 11)
    assert event_id(p, 10) == f"{p}-10"


# --- dialect, header, conversion ------------------------------------------------------------------


def test_header_with_bom_blank_lines_and_quoted_newline() -> None:
    data = b'\xef\xbb\xbf\n"a\nb",c\r\n1,2\r\n'
    h = read_header(io.BytesIO(data), CsvFormat(), "utf-8")
    assert h.names == ("a\nb", "c")
    assert data[h.data_offset :] == b"1,2\r\n"
    assert h.data_line == 4


def test_header_only_and_empty() -> None:
    h = read_header(io.BytesIO(b"a,b"), CsvFormat(), "utf-8")
    assert h.names == ("a", "b") and h.data_offset == 3
    h = read_header(io.BytesIO(b""), CsvFormat(), "utf-8")
    assert h.names is None and h.data_offset == 0
    h = read_header(io.BytesIO(b"\xef\xbb\xbf1,2\n"), CsvFormat(header=False, columns=["x", "y"]),
                    "utf-8")
    assert h.names is None and h.data_offset == 3 and h.data_line == 1


@pytest.mark.parametrize(
    ("value", "ctype", "expected"),
    [
        ("42", ColumnType.INT, 42), (" -7 ", ColumnType.INT, -7), ("", ColumnType.INT, None),
        ("1.5", ColumnType.FLOAT, 1.5), ("1e3", ColumnType.FLOAT, 1000.0),
        ("TRUE", ColumnType.BOOL, True), ("no", ColumnType.BOOL, False),
        ("2024-01-02T03:04:05Z", ColumnType.TIMESTAMP, "2024-01-02T03:04:05Z"),
        ("2024-01-02", ColumnType.TIMESTAMP, "2024-01-02"),
        ("x y", ColumnType.STRING, "x y"),
    ],
)
def test_convert(value: str, ctype: ColumnType, expected: object) -> None:
    assert convert(value, ctype) == expected


@pytest.mark.parametrize(
    ("value", "ctype"),
    [("4x", ColumnType.INT), ("1_000", ColumnType.INT), (str(2**63), ColumnType.INT),
     ("nan", ColumnType.FLOAT), ("maybe", ColumnType.BOOL), ("yesterday", ColumnType.TIMESTAMP)],
)
def test_convert_rejects(value: str, ctype: ColumnType) -> None:
    with pytest.raises(ConversionError):
        convert(value, ctype)


LAYOUT = Layout(
    columns=("id", "name", "n", "ok", "ts"),
    column_types={"id": "int", "n": "float", "ok": "bool", "ts": "timestamp"},
    key_columns=("id", "name"),
    source_url="file:///x.csv",
    id_prefix="pfx",
    include_metadata=True,
)


def test_fast_and_exact_paths_give_identical_messages() -> None:
    data = (
        b'1,"a, ""b""",1.5,true,2024-01-01T00:00:00Z\r\n'
        b"2,\xc3\xa9t\xc3\xa9,,no,\n"
        b'3,"multi\nline",-2,1,2024-02-03\n'
    )
    recs = chunk_records(data, ord('"'), ord(","))
    fast = parse_fast(data, LAYOUT, recs, 100, 5)
    assert fast is not None
    exact = parse_exact(data, LAYOUT, Spans(recs.starts, recs.ends, recs.lines), recs, 100, 0, 5)
    assert [orjson.loads(v) for v in fast.values] == [orjson.loads(v) for v in exact.values]
    assert fast.keys == exact.keys == ["1|a, \"b\"", "2|été", "3|multi\nline"]
    first = orjson.loads(fast.values[0])
    assert first == {"id": 1, "name": 'a, "b"', "n": 1.5, "ok": True, "ts": "2024-01-01T00:00:00Z",
                     "_source": "file:///x.csv", "_line": 5, "_id": "pfx-100"}
    assert orjson.loads(fast.values[2])["_line"] == 7



@pytest.mark.parametrize(("metadata", "event_id"),
                         [(m, e) for m in (True, False) for e in (True, False)])
def test_message_layouts_agree_on_both_paths(metadata: bool, event_id: bool) -> None:
    """The templated fast path (plain strings) writes the same JSON as the exact path, for each
    combination of the metadata and event-id fields."""
    layout = Layout(columns=("id", "name"), key_columns=("id",), source_url="s3://b/k.csv",
                    id_prefix="pfx", include_metadata=metadata, include_event_id=event_id)
    data = b'1,"a, b"\n2,\n3,x y\n'
    recs = chunk_records(data, ord('"'), ord(","))
    fast = parse_fast(data, layout, recs, 100, 5)
    assert fast is not None
    exact = parse_exact(data, layout, Spans(recs.starts, recs.ends, recs.lines), recs, 100, 0, 5)
    got = [orjson.loads(v) for v in fast.values]
    assert got == [orjson.loads(v) for v in exact.values]
    expected = {"id": "1", "name": "a, b"}
    if metadata:
        expected |= {"_source": "s3://b/k.csv", "_line": 5}
    if event_id:
        expected["_id"] = "pfx-100"
    assert got[0] == expected
    assert list(got[0]) == list(expected)  # field order: columns, _source, _line, _id

def test_bad_rows_get_exact_lines_and_reasons() -> None:
    data = (
        b"1,a,1,true,2024-01-01\n"
        b"2,b,1\n"  # too few fields
        b"x,c,1,true,2024-01-01\n"  # bad int
        b"4,\xff,1,true,2024-01-01\n"  # invalid UTF-8
        b"5,e,1,true,2024-01-01\n"
        b'6,"f,1,true,2024-01-01\n7,g\n'  # unterminated quote at end of file
    )
    parsed = parse_chunk(data, LAYOUT, 0, 0, 2)
    assert not parsed.fast
    assert parsed.rows_read == 6
    assert len(parsed.values) == 2
    assert [(b.line, b.row) for b in parsed.bad] == [(3, 2), (4, 3), (5, 4), (7, 6)]
    reasons = [b.reason for b in parsed.bad]
    assert "expected 5 fields, found 3" in reasons[0]
    assert "not an int" in reasons[1]
    assert "invalid utf-8" in reasons[2]
    assert "unterminated" in reasons[3]
    assert parsed.bad[0].raw == b"2,b,1"


def test_too_few_and_too_many_fields_that_balance_out_are_both_bad() -> None:
    layout = Layout(columns=("a", "b", "c"), include_metadata=False,
                    include_event_id=False)
    data = b"1,2,3\n4,5\n6,7,8,9\n10,11,12\n"
    parsed = parse_chunk(data, layout, 0, 0, 2)
    assert [(b.line, b.reason) for b in parsed.bad] == [
        (3, "expected 3 fields, found 2"), (4, "expected 3 fields, found 4")
    ]
    assert [orjson.loads(v)["a"] for v in parsed.values] == ["1", "10"]


def test_escape_char_dialect_uses_python_records() -> None:
    fmt = CsvFormat(escape_char="\\", header=False, columns=["a", "b"])
    data = b'1,"x\\"y"\n\n2,"p\\\nq"\n3,z'
    layout = Layout(columns=("a", "b"), escape_char="\\", include_metadata=False,
                    include_event_id=False)
    recs = list(python_records(io.BytesIO(data), layout))
    assert b"".join(r for r, _ in recs) == data
    start = Checkpoint(0, 0, 1, "f", None)
    chunks = list(cut_chunks(io.BytesIO(data), layout, start, Tuning(), 100))
    assert sum(c.rows for c, _ in chunks) == 3
    c = chunks[0][0]
    parsed = parse_chunk(c.data, layout, 0, 0, 1, c.spans)
    assert [orjson.loads(v) for v in parsed.values] == [
        {"a": "1", "b": 'x"y'}, {"a": "2", "b": "p\nq"}, {"a": "3", "b": "z"}
    ]
    del fmt


def test_resolve_layout_checks_columns() -> None:
    from ingest_worker.dialect import ConfigError, Header

    spec = CsvIngestionSpec.model_validate(
        {"source": {"url": "x.csv"}, "kafka": {"bootstrapServers": "b:1", "topic": "t",
                                               "keyColumns": ["nope"]}}
    )
    with pytest.raises(ConfigError, match="key column"):
        resolve_layout(spec, Header(("a", "b"), 4, 2), "x.csv", None, "utf-8")
    with pytest.raises(ConfigError, match="duplicate"):
        resolve_layout(spec, Header(("a", "a"), 4, 2), "x.csv", None, "utf-8")


# --- the command line -----------------------------------------------------------------------------


def test_cli_flags_map_onto_the_spec() -> None:
    args = build_parser().parse_args([
        "run", "s3://bucket/k.csv.gz", "--topic", "t", "--bootstrap-servers", "h:9092",
        "--key", "a", "--key", "b", "--delimiter", ";", "--no-header", "--columns", "a,b,c",
        "--type", "c=int", "--checkpoint-rows", "500", "--checkpoint-seconds", "2",
        "--dead-letter-topic", "dlq", "--max-errors", "3", "--max-error-ratio", "0.5",
        "--retry-budget-seconds", "30", "--parallelism", "3", "--producer-property",
        "linger.ms=5", "--no-metadata", "--encoding", "latin-1", "--quote-char", "'",
    ])
    spec = spec_from_args(args)
    assert spec.source.url == "s3://bucket/k.csv.gz"
    assert spec.kafka.topic == "t" and spec.kafka.bootstrap_servers == "h:9092"
    assert spec.kafka.key_columns == ["a", "b"]
    assert spec.kafka.dead_letter_topic == "dlq"
    assert spec.kafka.retry_budget_seconds == 30
    assert spec.kafka.producer_properties == {"linger.ms": "5"}
    assert not spec.kafka.include_metadata and not spec.kafka.include_event_id
    base = ["run", "f.csv", "--topic", "t", "--bootstrap-servers", "h:1"]
    lean = spec_from_args(build_parser().parse_args(base))
    assert lean.kafka.include_event_id and not lean.kafka.include_metadata
    full = spec_from_args(build_parser().parse_args([*base, "--metadata"]))
    assert full.kafka.include_event_id and full.kafka.include_metadata
    assert spec.format.delimiter == ";" and spec.format.quote_char == "'"
    assert not spec.format.header and spec.format.columns == ["a", "b", "c"]
    assert spec.format.column_types == {"c": ColumnType.INT}
    assert spec.format.encoding == "latin-1"
    assert spec.checkpoint.every_rows == 500 and spec.checkpoint.every_seconds == 2
    assert spec.errors.max_errors == 3 and spec.errors.max_error_ratio == 0.5
    assert spec.worker.parallelism == 3


def test_cli_spec_file_manifest_with_flag_override(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: csvkafka.io/v1alpha1\nkind: CsvIngestion\nmetadata: {name: x}\n"
        "spec:\n  source: {url: /data/a.csv}\n"
        "  kafka: {bootstrapServers: 'k:9092', topic: orders, keyColumns: [id]}\n"
        "  format: {delimiter: ';'}\n"
    )
    args = build_parser().parse_args(["run", "--spec", str(manifest), "--topic", "other"])
    spec = spec_from_args(args)
    assert spec.source.url == "/data/a.csv"
    assert spec.kafka.topic == "other"
    assert spec.kafka.key_columns == ["id"]
    assert spec.format.delimiter == ";"


def test_scan_random_bytes_never_crash() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        data = bytes(rng.choice(list(b'a,"\n\r'), size=int(rng.integers(0, 200))).tolist())
        recs = chunk_records(data, ord('"'), ord(","))
        assert (recs.ends >= recs.starts).all()


# --- sources and encodings ------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["", ".gz", ".bz2", ".zst"])
def test_source_opens_at_an_uncompressed_offset(tmp_path: Path, ext: str) -> None:
    import bz2
    import gzip

    from ingest_worker.sources import CsvSource

    data = b"".join(f"{i},{'x' * (i % 50)}\n".encode() for i in range(20000))
    path = tmp_path / f"f.csv{ext}"
    if ext == ".gz":
        path.write_bytes(gzip.compress(data))
    elif ext == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif ext == ".zst":
        from backports import zstd

        path.write_bytes(zstd.compress(data))
    else:
        path.write_bytes(data)
    src = CsvSource(str(path))
    assert src.version is not None and "mtime_ns" in src.version
    assert src.size == (len(data) if ext == "" else None)
    for offset in (0, 1, 12345, len(data) - 3):
        with src.open(offset) as f:
            assert f.read() == data[offset:]
    same = CsvSource(f"file://{path}")
    assert same.version == src.version


def test_latin1_file_both_paths() -> None:
    layout = Layout(columns=("a", "b"), encoding="iso8859-1", include_metadata=False,
                    include_event_id=False)
    data = "1,caf\xe9\n2,\"na\xefve, yes\"\n".encode("latin-1")
    fast = parse_chunk(data, layout, 0, 0, 1)
    assert fast.fast
    recs = chunk_records(data, ord('"'), ord(","))
    exact = parse_exact(data, layout, Spans(recs.starts, recs.ends, recs.lines), recs, 0, 0, 1)
    expected = [{"a": "1", "b": "café"}, {"a": "2", "b": "naïve, yes"}]
    assert [orjson.loads(v) for v in fast.values] == expected
    assert [orjson.loads(v) for v in exact.values] == expected


def test_backoff_grows_with_jitter_and_ends_with_the_budget() -> None:
    import time as _time

    from ingest_worker.producer import KafkaUnavailable, backoff_deadline

    now = _time.monotonic()
    for attempt in range(1, 8):
        wait = backoff_deadline(attempt, now, budget_s=300, last_error=None) - _time.monotonic()
        assert 0 <= wait <= min(30.0, 0.5 * 2**attempt) + 0.01
    # Never sleeps past the budget, and fails once it is spent, naming the last error.
    assert backoff_deadline(20, now - 299.9, 300, None) - _time.monotonic() <= 0.2
    with pytest.raises(KafkaUnavailable, match=r"Kafka unavailable for 301s: broker down"):
        backoff_deadline(1, now - 301, 300, "broker down")


def test_native_producer_abort_lets_go_of_buffers_only_once_librdkafka_is_gone() -> None:
    """Values are not copied into librdkafka: a worker that stops with messages still queued
    (here: no broker at all) must destroy the client before the buffers are released."""
    from ingest_worker import native

    if not native.available():
        pytest.skip("librdkafka not found next to confluent_kafka")
    producer = native.NativeProducer(
        {"bootstrap.servers": "127.0.0.1:1", "partitioner": "murmur2_random"}, "t", 60.0)
    payload = b'{"a":"1"}\n{"a":"2"}\n'
    starts, lens = np.array([0, 10]), np.array([9, 9])
    producer.produce_chunk(payload, starts, lens, b"12", np.array([0, 1]), np.array([1, 1]))
    assert producer._queued() == 2 and producer._inflight  # waiting for a broker
    producer.close(abort=True)
    assert producer.rk is None and not producer._inflight
