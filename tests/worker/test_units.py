"""Pure unit tests of the worker's decisions: boundaries, chunks, encoding, watermark, ids,
dialect, error budget, CLI."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from csvkafka_core import Batch, cut
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_worker.api.spec import ColumnType, CsvFormat, CsvIngestionSpec, ErrorPolicy
from ingest_worker.checkpoint import (
    Checkpoint,
    ChunkDone,
    FileCheckpointStore,
    Outcome,
    Watermark,
)
from ingest_worker.cli import build_parser, spec_from_args
from ingest_worker.csv.chunks import Chunk, cut_chunks
from ingest_worker.csv.dialect import (
    Layout,
    event_id,
    event_id_prefix,
    is_blank_record,
    python_records,
    read_header,
    resolve_layout,
    strip_eol,
)
from ingest_worker.csv.encode import Bad, ChunkEncoder, Encoded
from ingest_worker.kafka.producer import KafkaUnavailable, RowProducer, producer_config
from ingest_worker.policy import MIN_ROWS_FOR_RATIO, over_budget

# --- record boundaries (csvkafka_core.cut) --------------------------------------------------------

# A bare CR is not a record terminator here (files end lines with LF or CRLF), so CR only
# appears as part of CRLF.
field_text = st.lists(
    st.sampled_from([*'ab ,;"\n\té€x', "\r\n"]), min_size=0, max_size=8
).map("".join)
rows_strategy = st.lists(st.lists(field_text, min_size=3, max_size=3), min_size=0, max_size=30)
EVERYTHING = 1 << 40
"""A chunk size no test reaches: one chunk for the whole buffer."""


def write_csv(rows: list[list[str]], delimiter: str = ",", eol: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=eol).writerows(rows)
    return out.getvalue().encode()


def python_parse(data: bytes, delimiter: str = ",") -> list[list[str]]:
    text = data.decode()
    return [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]


def record_spans(
    data: bytes, delimiter: str = ",", quote: str | None = '"', eof: bool = True
) -> list[tuple[int, int]]:
    """(start, end) of every record, blank lines included: the cut at one record per chunk."""
    spans, start = [], 0
    for end, _, _ in cut(data, ord(delimiter), None if quote is None else ord(quote), eof, 1, 1):
        spans.append((start, end))
        start = end
    return spans


def whole_chunk(data: bytes, layout: Layout, offset: int = 0, row: int = 0, line: int = 1) -> Chunk:
    """``data`` as one chunk starting at ``offset``, data row ``row`` + 1 and line ``line``."""
    cuts = cut(data, layout.delimiter_byte, layout.quote_byte, True, EVERYTHING, EVERYTHING)
    assert len(cuts) <= 1 and (not cuts or cuts[0][0] == len(data))
    rows, newlines = (cuts[0][1], cuts[0][2]) if cuts else (0, 0)
    return Chunk(0, data, offset, row, line, rows, newlines)


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, eol=st.sampled_from(["\n", "\r\n"]), delim=st.sampled_from([",", ";"]))
def test_cut_agrees_with_python_csv(rows: list[list[str]], eol: str, delim: str) -> None:
    data = write_csv(rows, delim, eol)
    spans = [(s, e) for s, e in record_spans(data, delim) if not is_blank_record(data[s:e])]
    expected = python_parse(data, delim)
    assert len(spans) == len(expected)
    # Each record, parsed alone, is exactly the row Python's csv module sees there.
    got = [python_parse(data[s:e], delim)[0] for s, e in spans]
    assert got == expected
    # The records tile the buffer, and a chunk's counts are its records' and its newlines.
    assert [e for _, e in record_spans(data, delim)][-1:] == ([len(data)] if data else [])
    whole = cut(data, ord(delim), ord('"'), True, EVERYTHING, EVERYTHING)
    assert whole == ([(len(data), len(expected), data.count(b"\n"))] if data else [])
    # The encoder reads the same rows, at the physical line each record starts on.
    layout = Layout(columns=("c0", "c1", "c2"), delimiter=delim, include_event_id=False,
                    include_metadata=True, source_url="u")
    enc = ChunkEncoder(layout).encode(whole_chunk(data, layout))
    assert not enc.bad()
    assert [orjson.loads(v) for v in enc.values] == [
        {"c0": a, "c1": b, "c2": c, "_source": "u", "_line": data[:s].count(b"\n") + 1}
        for (a, b, c), (s, _) in zip(expected, spans, strict=True)
    ]


def test_cut_blank_lines_and_final_record_without_newline() -> None:
    data = b'a,b\n\n\r\n"x\ny",z\nlast,1'
    spans = [(s, e) for s, e in record_spans(data) if not is_blank_record(data[s:e])]
    assert [data[s:e] for s, e in spans] == [b"a,b\n", b'"x\ny",z\n', b"last,1"]
    assert [data[:s].count(b"\n") for s, _ in spans] == [0, 3, 5]
    # Blank lines are not rows but their newlines count; without eof the last record waits.
    assert cut(data, ord(","), ord('"'), True, EVERYTHING, EVERYTHING) == [(len(data), 3, 5)]
    assert cut(data, ord(","), ord('"'), False, EVERYTHING, EVERYTHING) == [(len(data) - 6, 2, 5)]
    assert cut(data, ord(","), ord('"'), True, 2, EVERYTHING) == [(15, 2, 5), (len(data), 1, 0)]


def test_cut_unterminated_quote_at_end() -> None:
    data = b'a,b\nc,"d\ne,f\n'
    assert cut(data, ord(","), ord('"'), False, 1, 1) == [(4, 1, 1)]  # the rest is incomplete
    # At the end of the file the rest is one record, which Python's csv says is bad.
    assert cut(data, ord(","), ord('"'), True, 1, 1) == [(4, 1, 1), (len(data), 1, 2)]
    layout = Layout(columns=("a", "b"), include_event_id=False)
    enc = ChunkEncoder(layout).encode(whole_chunk(data, layout))
    assert [orjson.loads(v) for v in enc.values] == [{"a": "a", "b": "b"}]
    assert bad_rows(enc) == [
        (2, 2, 4, "unterminated quoted field at end of file", b'c,"d\ne,f')]


@settings(max_examples=50, deadline=None)
@given(rows=rows_strategy, block=st.integers(1, 64), max_rows=st.integers(1, 7))
def test_cut_chunks_cover_the_file_on_record_boundaries(
    rows: list[list[str]], block: int, max_rows: int
) -> None:
    data = b"h1,h2,h3\n" + write_csv(rows)
    header = read_header(io.BytesIO(data), CsvFormat(), "utf-8")
    layout = Layout(columns=("h1", "h2", "h3"))
    start = Checkpoint(header.data_offset, 0, header.data_line, "x", None)
    stream = io.BytesIO(data)
    stream.seek(header.data_offset)
    chunks = list(cut_chunks(stream, layout, start, max_rows=max_rows, max_bytes=block * 2,
                             read_bytes=block))
    assert b"".join(c.data for c in chunks) == data[header.data_offset :]
    expected = python_parse(data)[1:]
    assert sum(c.rows for c in chunks) == len(expected)
    nexts: list[Any] = [*chunks[1:], None][: len(chunks)]
    for seq, (chunk, nxt) in enumerate(zip(chunks, nexts, strict=True)):
        assert chunk.seq == seq
        assert 1 <= chunk.rows <= max_rows
        assert chunk.start_line == data[: chunk.start_offset].count(b"\n") + 1
        assert chunk.end_offset == chunk.start_offset + len(chunk.data)
        assert chunk.end_line == chunk.start_line + chunk.data.count(b"\n")
        if nxt is not None:
            assert (nxt.start_offset, nxt.start_row, nxt.start_line) == (
                chunk.end_offset, chunk.end_row, chunk.end_line)
        # The chunk's records are the ones the reader counted.
        recs = list(chunk.records(layout))
        assert b"".join(recs) == chunk.data
        assert sum(1 for r in recs if not is_blank_record(r)) == chunk.rows
    got = [r for c in chunks for r in python_parse(c.data)]
    assert got == expected


# --- encoding: the compiled encoder, and Python's csv for the rest (ChunkEncoder) -----------------


BadTuple = tuple[int, int, int, str, bytes]
"""A bad row: (line, row, offset, reason, raw)."""


def bad_rows(enc: Encoded) -> list[BadTuple]:
    """The encoded chunk's bad rows, every one, as the core keeps them."""
    return [(b.line, b.row, b.offset, b.reason, b.raw) for b in enc.bad().rows]


def exact_messages(
    layout: Layout, chunk: Chunk
) -> tuple[list[tuple[bytes, bytes | None]], list[BadTuple]]:
    """The chunk's messages and bad rows as the exact path (Python's csv) makes them, one
    record at a time."""
    enc = ChunkEncoder(layout)
    good: list[tuple[bytes, bytes | None]] = []
    bad: list[BadTuple] = []
    pos, line, row = 0, chunk.start_line, chunk.start_row
    for rec in chunk.records(layout):
        if not is_blank_record(rec):
            row += 1
            got = enc.exact_record(rec, line, chunk.start_offset + pos)
            if isinstance(got, Bad):
                bad.append((line, row, chunk.start_offset + pos, got.reason, strip_eol(rec)))
            else:
                good.append(got)
        pos += len(rec)
        line += rec.count(b"\n")
    return good, bad


def encode(data: bytes, layout: Layout, offset: int = 0, row: int = 0, line: int = 1) -> Encoded:
    return ChunkEncoder(layout).encode(whole_chunk(data, layout, offset, row, line))


# Fields of bytes that trouble a CSV reader, bare or quoted, among plain ones; records of mostly
# the right field count (two), so that the compiled encoder takes many and leaves the doubtful.
_plain = [b"a", b"1", b" ", b"\xc3\xa9"] * 3
_bare = st.lists(st.sampled_from([*_plain, b'"', b"\r", b"\x00"]), max_size=4)
_quoted = st.lists(st.sampled_from([*_plain, b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\x00",
                                    b"\xff", b"\\"]), max_size=4)
_field = st.one_of(_bare.map(b"".join), _quoted.map(lambda p: b'"' + b"".join(p) + b'"'))
_record = st.sampled_from([2, 2, 2, 1, 3]).flatmap(
    lambda n: st.lists(_field, min_size=n, max_size=n)).map(b",".join)
garbage = st.one_of(
    st.lists(st.sampled_from(list(b'a,"\n\r \x00\xc3\xa9')), max_size=200).map(bytes),
    st.lists(st.tuples(_record, st.sampled_from([b"\n", b"\r\n", b"\n\n", b""])), max_size=12)
    .map(lambda recs: b"".join(r + eol for r, eol in recs)),
)


@settings(max_examples=500, deadline=None)
@given(data=garbage)
def test_random_bytes_cut_and_encode_as_python_csv_does_record_by_record(data: bytes) -> None:
    """Garbage never crashes the cut or the encoder, and every record the compiled encoder
    takes is encoded as the exact path (Python's csv) encodes it; the others get its reason."""
    cuts = cut(data, ord(","), ord('"'), True, 1, 1)
    ends = [e for e, _, _ in cuts]
    assert ends == sorted(set(ends)) and ends[-1:] == ([len(data)] if data else [])
    assert sum(n for _, _, n in cuts) == data.count(b"\n")
    layout = Layout(columns=("a", "b"), key_columns=("b",), source_url="u", id_prefix="p",
                    include_metadata=True)
    chunk = whole_chunk(data, layout, offset=7, row=3, line=2)
    enc = ChunkEncoder(layout).encode(chunk)
    assert enc.rows_read == chunk.rows == sum(r for _, r, _ in cuts)
    good, bad = exact_messages(layout, chunk)
    assert enc.values == [v for v, _ in good]
    assert enc.keys == [(k or b"").decode() for _, k in good]
    assert bad_rows(enc) == bad


TYPED_VALUES = [
    "1", " -7 ", "+1", "-0", "00012", str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1),
    "1e3", "1E-3", "1.", ".5", "1e400", "-1e400", "1e-400", "0.1", "1" * 30, "nan", "inf",
    "0x1", "1_000", "\uff11", "true", "T", "Yes", "n", "0", "maybe", "", "  ", "\t1\t",
    "1e-5", "2.5e-5", "-2.5e-5", "9.99e-6", "0.000012345", "1e-6", "1e-4", "1e15", "1e16",
    "1.7976931348623157e308", "4.9e-324", "0.30000000000000004", "123456789e-5",
    "2024-01-02T03:04:05Z", "2024-01-02 03:04:05.123456789+01:00", "2024-01-02T03:04:05,5-0130",
    "2024-13-45", "2024-01-02T",
]


@pytest.mark.parametrize("ctype", ["int", "float", "bool", "timestamp"])
def test_typed_values_encode_as_the_exact_path(ctype: str) -> None:
    """Each conversion rule and JSON number format of the compiled encoder is Python's and
    orjson's, byte for byte; a value that does not convert gets the exact path's reason."""
    layout = Layout(columns=("v", "s"), column_types={"v": ctype}, include_event_id=False)
    data = b"".join(b'"' + v.replace('"', '""').encode() + b'",x\n' for v in TYPED_VALUES)
    chunk = whole_chunk(data, layout)
    enc = ChunkEncoder(layout).encode(chunk)
    good, bad = exact_messages(layout, chunk)
    assert bad_rows(enc) == bad
    assert enc.values == [v for v, _ in good]


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_as_orjson_writes_them(value: float) -> None:
    layout = Layout(columns=("v",), column_types={"v": "float"}, include_event_id=False)
    enc = encode(f"{value!r}\n".encode(), layout)
    assert enc.batch.exact() == []
    assert enc.values == [orjson.dumps({"v": value})], repr(value)


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
    layout = Layout(columns=("v", "s"), column_types={"v": ctype}, include_event_id=False)
    got = ChunkEncoder(layout).exact_record(f"{value},x".encode(), 1, 0)
    assert not isinstance(got, Bad), got
    assert orjson.loads(got[0]) == {"v": expected, "s": "x"}


@pytest.mark.parametrize(
    ("value", "ctype", "reason"),
    [("4x", ColumnType.INT, "not an int"), ("1_000", ColumnType.INT, "not an int"),
     (str(2**63), ColumnType.INT, "not an int"), ("nan", ColumnType.FLOAT, "not a float"),
     ("maybe", ColumnType.BOOL, "not a bool"),
     ("yesterday", ColumnType.TIMESTAMP, "not an ISO 8601 timestamp"),
     ("2024-13-45", ColumnType.TIMESTAMP, "not an ISO 8601 timestamp"),
     ("2024-02-30", ColumnType.DATE, "not a date (YYYY-MM-DD)"),
     ("1.5", ColumnType.DECIMAL, "more than 0 digits after the point")],
)
def test_convert_rejects(value: str, ctype: ColumnType, reason: str) -> None:
    layout = Layout(columns=("v",), column_types={"v": ctype}, include_event_id=False)
    got = ChunkEncoder(layout).exact_record(value.encode(), 1, 0)
    assert isinstance(got, Bad)
    assert got.reason == f"column 'v': {reason}: {value!r}"


LAYOUT = Layout(
    columns=("id", "name", "n", "ok", "ts"),
    column_types={"id": "int", "n": "float", "ok": "bool", "ts": "timestamp"},
    key_columns=("id", "name"),
    source_url="file:///x.csv",
    id_prefix="pfx",
    include_metadata=True,
)


def test_compiled_and_exact_paths_give_identical_messages() -> None:
    data = (
        b'1,"a, ""b""",1.5,true,2024-01-01T00:00:00Z\r\n'
        b"2,\xc3\xa9t\xc3\xa9,,no,\n"
        b'3,"multi\nline",-2,1,2024-02-03\n'
    )
    chunk = whole_chunk(data, LAYOUT, offset=100, line=5)
    enc = ChunkEncoder(LAYOUT).encode(chunk)
    assert enc.batch.exact() == []  # all three plainly valid: the compiled encoder took them
    good, bad = exact_messages(LAYOUT, chunk)
    assert not bad and not enc.bad()
    assert enc.values == [v for v, _ in good]  # byte for byte
    assert enc.keys == [(k or b"").decode() for _, k in good] == [
        "1|a, \"b\"", "2|été", "3|multi\nline"]
    first = orjson.loads(enc.values[0])
    assert first == {"id": 1, "name": 'a, "b"', "n": 1.5, "ok": True, "ts": "2024-01-01T00:00:00Z",
                     "_source": "file:///x.csv", "_line": 5, "_id": "pfx-100"}
    assert orjson.loads(enc.values[2])["_line"] == 7
    assert enc.batch.message_lines() == [5, 6, 7]


@pytest.mark.parametrize(("metadata", "event_id"),
                         [(m, e) for m in (True, False) for e in (True, False)])
def test_message_layouts_agree_on_both_paths(metadata: bool, event_id: bool) -> None:
    """The compiled encoder writes the same JSON as the exact path, for each combination of the
    metadata and event-id fields."""
    layout = Layout(columns=("id", "name"), key_columns=("id",), source_url="s3://b/k.csv",
                    id_prefix="pfx", include_metadata=metadata, include_event_id=event_id)
    data = b'1,"a, b"\n2,\n3,x y\n'
    chunk = whole_chunk(data, layout, offset=100, line=5)
    enc = ChunkEncoder(layout).encode(chunk)
    assert enc.batch.exact() == []
    good, _ = exact_messages(layout, chunk)
    assert enc.values == [v for v, _ in good]
    got = [orjson.loads(v) for v in enc.values]
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
    enc = encode(data, LAYOUT, line=2)
    # The doubtful records went to the exact path, which set them aside; the plainly bad ones
    # (a field count, an int) the compiled encoder set aside itself, with the same reasons.
    assert [line for _, _, _, line, _ in enc.batch.exact()] == [5, 7]
    assert bad_rows(enc) == exact_messages(LAYOUT, whole_chunk(data, LAYOUT, line=2))[1]
    assert enc.rows_read == 6
    assert len(enc.values) == 2
    bad = enc.bad()
    assert [(b.line, b.row) for b in bad.rows] == [(3, 2), (4, 3), (5, 4), (7, 6)]
    assert [b.reason for b in bad.rows] == [
        "expected 5 fields, found 3", "column 'id': not an int: 'x'",
        "invalid utf-8 at byte 2 of the row", "unterminated quoted field at end of file"]
    # Counted by kind: the reason without what is particular to the row.
    assert (bad.count, bad.last_line) == (4, 7)
    assert bad.kinds == {"expected 5 fields, found 3": 1, "column 'id': not an int": 1,
                         "invalid utf-8": 1, "unterminated quoted field at end of file": 1}
    assert bad.rows[0].raw == b"2,b,1"
    assert [b.offset for b in bad.rows] == [data.index(p) for p in (b"2,b", b"x,c", b"4,", b'6,"')]
    # Only as many as asked for become rows; the count and kinds are whole.
    assert [b.line for b in enc.bad(2).rows] == [3, 4] and enc.bad(0).count == 4
    assert enc.batch.message_lines() == [2, 6]


def test_a_value_with_a_colon_counts_under_its_columns_kind_on_both_paths() -> None:
    """The log counts bad rows by kind: the core's (an unquoted value) and the exact path's (a
    value with doubled quotes) agree, whatever the value holds."""
    layout = Layout(columns=("n", "s"), column_types={"n": "int"}, include_event_id=False)
    bad = encode(b'x: y,a\n"x: ""y""",b\n', layout).bad()
    assert [b.reason for b in bad.rows] == ["column 'n': not an int: 'x: y'",
                                            "column 'n': not an int: 'x: \"y\"'"]
    assert bad.kinds == {"column 'n': not an int": 2}


def test_too_few_and_too_many_fields_that_balance_out_are_both_bad() -> None:
    layout = Layout(columns=("a", "b", "c"), include_metadata=False,
                    include_event_id=False)
    data = b"1,2,3\n4,5\n6,7,8,9\n10,11,12\n"
    enc = encode(data, layout, line=2)
    assert [(b.line, b.reason) for b in enc.bad().rows] == [
        (3, "expected 3 fields, found 2"), (4, "expected 3 fields, found 4")
    ]
    assert [orjson.loads(v)["a"] for v in enc.values] == ["1", "10"]


def test_escape_char_dialect_uses_python_records() -> None:
    data = b'1,"x\\"y"\n\n2,"p\\\nq"\n3,z'
    layout = Layout(columns=("a", "b"), escape_char="\\", include_metadata=False,
                    include_event_id=False)
    recs = list(python_records(io.BytesIO(data), layout))
    assert b"".join(r for r, _ in recs) == data
    start = Checkpoint(0, 0, 1, "f", None)
    chunks = list(cut_chunks(io.BytesIO(data), layout, start, max_rows=100, max_bytes=1 << 20))
    assert sum(c.rows for c in chunks) == 3
    assert len(chunks) == 1
    c = chunks[0]
    assert list(c.records(layout)) == [r for r, _ in recs]
    enc = ChunkEncoder(layout).encode(c)
    assert [orjson.loads(v) for v in enc.values] == [
        {"a": "1", "b": 'x"y'}, {"a": "2", "b": "p\nq"}, {"a": "3", "b": "z"}
    ]
    assert enc.batch.message_lines() == [1, 3, 5]


def test_resolve_layout_checks_columns() -> None:
    from ingest_worker.csv.dialect import ConfigError, Header

    spec = CsvIngestionSpec.model_validate(
        {"source": {"url": "x.csv"}, "kafka": {"bootstrapServers": "b:1", "topic": "t",
                                               "keyColumns": ["nope"]}}
    )
    with pytest.raises(ConfigError, match="key column"):
        resolve_layout(spec, Header(("a", "b"), 4, 2), "x.csv", None, "utf-8")
    with pytest.raises(ConfigError, match="duplicate"):
        resolve_layout(spec, Header(("a", "a"), 4, 2), "x.csv", None, "utf-8")


def test_latin1_file() -> None:
    """An encoding other than UTF-8 goes the exact path, cut by the compiled core."""
    layout = Layout(columns=("a", "b"), encoding="iso8859-1", include_metadata=False,
                    include_event_id=False)
    data = "1,caf\xe9\n2,\"na\xefve, yes\"\n".encode("latin-1")
    chunk = whole_chunk(data, layout)
    enc = ChunkEncoder(layout).encode(chunk)
    expected = [{"a": "1", "b": "café"}, {"a": "2", "b": "naïve, yes"}]
    assert [orjson.loads(v) for v in enc.values] == expected
    good, _ = exact_messages(layout, chunk)
    assert enc.values == [v for v, _ in good]


# --- the error budget -----------------------------------------------------------------------------


def test_error_budget_counts_bad_rows() -> None:
    assert over_budget(ErrorPolicy(), 10**6, 10**6) is None  # by default bad rows never fail
    pol = ErrorPolicy(max_errors=3)
    assert over_budget(pol, 3, 3) is None
    assert over_budget(pol, 4, 10) == "too many bad rows: 4 > maxErrors 3"
    assert over_budget(ErrorPolicy(max_errors=0), 1, 1) == "too many bad rows: 1 > maxErrors 0"


def test_error_budget_ratio_is_judged_from_enough_rows() -> None:
    pol = ErrorPolicy(max_error_ratio=0.1)
    assert over_budget(pol, 2, 3) is None  # two bad rows of the first three are no trend
    n = MIN_ROWS_FOR_RATIO
    assert over_budget(pol, n // 10, n) is None  # at the ratio, not over it
    assert over_budget(pol, n // 10 + 1, n) == (
        f"too many bad rows: {n // 10 + 1} of {n} (10.10%) > maxErrorRatio 0.1")
    both = ErrorPolicy(max_errors=5, max_error_ratio=0.5)
    assert over_budget(both, 6, 10) == "too many bad rows: 6 > maxErrors 5"


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



def test_cli_accepts_and_ignores_worker_processes() -> None:
    base = ["run", "f.csv", "--topic", "t", "--bootstrap-servers", "h:1"]
    plain = spec_from_args(build_parser().parse_args(base))
    legacy = spec_from_args(build_parser().parse_args([*base, "--worker-processes"]))
    assert legacy == plain


# --- the producer, without a broker ---------------------------------------------------------------

NO_BROKER = "127.0.0.1:1"


def two_messages() -> Batch:
    return Batch.from_messages([b'{"a":"1"}', b'{"a":"2"}'], [b"1", b"2"], [1, 2], [2, 3],
                               [0, 10], 2)


def test_retries_end_with_the_budget_naming_the_last_error() -> None:
    """Undeliverable rows are retried (with backoff) until the retry budget has passed without
    an acknowledgement, then the run fails, saying why: never sooner, never much later."""
    budget = 3.0
    producer = RowProducer(producer_config(NO_BROKER, budget), "t", budget)
    try:
        t0 = time.monotonic()  # the budget runs from the hand-over (the send looks the topic up)
        producer.send(two_messages())
        why = r"Kafka unavailable for \d+s: .*(down|timed out)"
        with pytest.raises(KafkaUnavailable, match=why):
            producer.flush()
        assert budget - 0.1 <= time.monotonic() - t0 <= budget + 5
    finally:
        producer.close(abort=True)


def test_producer_abort_lets_go_of_buffers_only_once_librdkafka_is_gone() -> None:
    """Values are not copied into librdkafka: a worker that stops with messages still queued
    (here: no broker at all) must destroy the client before the batch is released."""
    producer = RowProducer(producer_config(NO_BROKER, 60), "t", 60.0)
    batch = two_messages()
    producer.send(batch)
    with pytest.raises(ValueError, match="already sent"):
        batch.message_values()  # the producer owns it now
    del batch
    t0 = time.monotonic()
    producer.close(abort=True)  # at once: nothing waits for a broker that is not there
    assert time.monotonic() - t0 < 5
    with pytest.raises(ValueError, match="closed"):
        producer.send(two_messages())


def test_a_stop_request_ends_a_blocked_flush() -> None:
    import threading

    producer = RowProducer(producer_config(NO_BROKER, 300), "t", 300.0)
    try:
        producer.send(two_messages())
        threading.Timer(1.0, producer.stop).start()
        t0 = time.monotonic()
        with pytest.raises(InterruptedError):
            producer.flush()
        assert time.monotonic() - t0 < 10
    finally:
        producer.close(abort=True)


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

