"""Property-based hostile input: generated CSV files with random dialect features.

Truth is Python's ``csv`` module, read by the independent verifier (ingest_worker.verify):

* end to end (the worker's API against the real broker): what lands in Kafka equals what
  Python's csv reads, bad rows go to the dead-letter topic exactly;
* the parser alone (the worker's chunk cutter + chunk encoder, with tiny random block and chunk
  sizes so records straddle every boundary), many more examples, no broker; also on malformed
  files no CSV writer makes;
* resume: from ANY record boundary of the file, a run publishes exactly the rows after it, with
  the same ids and line numbers as a run from the start.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.checkpoint import Checkpoint, Counters, MemoryCheckpointStore
from ingest_worker.csv.chunks import cut_chunks
from ingest_worker.csv.dialect import Layout, event_id_prefix
from ingest_worker.csv.encode import ChunkEncoder
from ingest_worker.run import run_ingestion
from ingest_worker.verify import (
    BadRow,
    CsvFormat,
    GoodRow,
    local_version,
    parse_source,
    records,
    verify,
    verify_messages,
)

# Text that stresses a CSV reader: separators, quotes, newlines, spaces, NUL, non-ASCII.
FIELD_CHARS = st.sampled_from(
    # U+FEFF is left out here: a record starting with it is a known bug with its own test.
    [*",;|\t\"' \n\r\x00abcxyz019.-", "é", "€", "漢", "😀", "\u2028"]
)
FIELD = st.text(FIELD_CHARS, max_size=12)
# Column names: non-empty, unique after trimming, never a metadata name.
NAME = st.text(st.sampled_from(list("abcdefgh_é ,\"")), min_size=1, max_size=6).filter(
    lambda s: s.strip() and not s.strip().startswith("_")
)


@dataclass(frozen=True)
class GeneratedCsv:
    data: bytes
    delimiter: str
    columns: tuple[str, ...]

    def fmt(self) -> CsvFormat:
        return CsvFormat(delimiter=self.delimiter)


@st.composite
def csv_files(draw: st.DrawFn, max_rows: int = 30) -> GeneratedCsv:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique_by=lambda s: s.strip()))
    ncols = len(names)
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    buf = io.StringIO(newline="")

    class _Writer:
        # Not csv.writer: it leaves a bare CR unquoted when the terminator is "\n" (a file
        # Python's own reader then rejects). That case has its own fixed test.
        def writerow(self, row: list[str]) -> None:
            def q(f: str) -> str:
                if any(c in f for c in (delimiter, '"', "\r", "\n")) or (
                    len(row) == 1 and f == ""
                ):
                    return '"' + f.replace('"', '""') + '"'
                return f

            buf.write(delimiter.join(q(f) for f in row) + terminator)

    w = _Writer()
    w.writerow(names)
    rows = draw(st.lists(st.lists(FIELD, min_size=ncols, max_size=ncols), max_size=max_rows))
    for row in rows:
        kind = draw(st.sampled_from(["row"] * 8 + ["blank", "ragged"]))
        if kind == "blank":
            buf.write(terminator)
        elif kind == "ragged":  # a bad row: one field too many
            w.writerow([*row, "extra"])
        if kind != "blank":
            w.writerow(row)
    text = buf.getvalue()
    if draw(st.booleans()):
        text = text.removesuffix(terminator)  # no newline at the end of the file
    data = text.encode()
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return GeneratedCsv(data, delimiter, tuple(n.strip() for n in names))


# --- end to end, against the real broker --------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(gen=csv_files())
def test_what_lands_in_kafka_equals_python_csv(
    gen: GeneratedCsv,
    tmp_path: Path,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
) -> None:
    path = tmp_path / f"gen-{abs(hash(gen.data))}.csv"
    path.write_bytes(gen.data)
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1, prefix="dlq")
    spec = CsvIngestionSpec.model_validate(
        {
            "source": {"url": str(path)},
            "kafka": {"bootstrapServers": kafka_bootstrap, "topic": topic,
                      "deadLetterTopic": dlq},
            "format": {"delimiter": gen.delimiter},
            "worker": {"parallelism": 1},
        }
    )
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    report = verify(str(path), topic, kafka_bootstrap, gen.fmt(), dead_letter_topic=dlq,
                    reported_bad=result.counters.rows_failed, timeout=20)
    assert report.ok, f"{report.summary()}\nfile: {gen.data!r}"
    assert report.duplicates == 0  # no interruption, so no redelivery
    assert result.counters.rows_published == report.rows_expected


# --- the parser alone, many more examples -------------------------------------------------------


class _Msg:
    def __init__(self, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._value, self._headers = value, headers

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def _layout(gen: GeneratedCsv, url: str, version: str) -> tuple[Layout, int, int]:
    """The worker's layout, with the data start found independently (verifier's records)."""
    header_end, line = 0, 1
    for rec in records(io.BytesIO(gen.data), gen.fmt()):
        header_end, line = rec.offset + len(rec.raw), rec.line + rec.raw.count(b"\n")
        if rec.raw.strip(b"\r\n"):
            break
    layout = Layout(columns=gen.columns, delimiter=gen.delimiter, source_url=url,
                    id_prefix=event_id_prefix(url, version))
    return layout, header_end, line


def _worker_messages(
    gen: GeneratedCsv, layout: Layout, start: Checkpoint, *, read_bytes: int, max_bytes: int,
    max_rows: int
) -> tuple[list[_Msg], list[_Msg]]:
    """The messages and dead letters the worker makes of the file from ``start``: its reader's
    cut (``cut_chunks``) and its workers' encoder (``ChunkEncoder``), no broker."""
    stream = io.BytesIO(gen.data)
    stream.seek(start.byte_offset)
    encoder = ChunkEncoder(layout)
    good: list[_Msg] = []
    bad: list[_Msg] = []
    for chunk in cut_chunks(stream, layout, start, max_rows=max_rows, max_bytes=max_bytes,
                            read_bytes=read_bytes):
        encoded = encoder.encode(chunk)
        good += [_Msg(v) for v in encoded.values]
        bad += [_Msg(b.raw, [("offset", str(b.offset).encode())]) for b in encoded.bad().rows]
    return good, bad


@settings(max_examples=300, deadline=None)
@given(
    gen=csv_files(max_rows=40),
    block=st.integers(1, 96),
    chunk_rows=st.integers(1, 7),
)
def test_parser_equals_python_csv_at_any_block_size(
    gen: GeneratedCsv, block: int, chunk_rows: int
) -> None:
    url, version = "file:///fuzz.csv", "v1"
    layout, data_offset, data_line = _layout(gen, url, version)
    start = Checkpoint(data_offset, 0, data_line, url, version)
    good, bad = _worker_messages(gen, layout, start, read_bytes=block,
                                 max_bytes=max(block, 64), max_rows=chunk_rows)
    report = verify_messages(io.BytesIO(gen.data), good, gen.fmt(), source_url=url,
                             id_prefix=layout.id_prefix, dead_letters=bad)
    assert report.ok and report.duplicates == 0, f"{report.summary()}\nfile: {gen.data!r}"


# What no CSV writer makes: quotes inside unquoted fields, bare CRs, NULs, invalid UTF-8,
# unterminated quotes, wrong field counts, among plain fields.
_PLAIN = [b"a", b"1", b" ", b"\xc3\xa9"] * 3
_BARE = st.lists(st.sampled_from([*_PLAIN, b'"', b"\r", b"\x00", b"\xff"]), max_size=4)
_QUOTED = st.lists(st.sampled_from([*_PLAIN, b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\xff"]),
                   max_size=4)
_FIELD = st.one_of(_BARE.map(b"".join), _QUOTED.map(lambda p: b'"' + b"".join(p) + b'"'))
_RECORD = st.sampled_from([2, 2, 2, 1, 3]).flatmap(
    lambda n: st.lists(_FIELD, min_size=n, max_size=n)).map(b",".join)
GARBAGE = st.lists(st.tuples(_RECORD, st.sampled_from([b"\n", b"\r\n", b"\n\n", b""])),
                   max_size=15).map(lambda recs: b"".join(r + eol for r, eol in recs))


@settings(max_examples=300, deadline=None)
@given(body=GARBAGE, block=st.integers(1, 64), chunk_rows=st.integers(1, 5))
def test_parser_equals_python_csv_on_malformed_files(body: bytes, block: int,
                                                     chunk_rows: int) -> None:
    gen = GeneratedCsv(b"a,b\n" + body, ",", ("a", "b"))
    url, version = "file:///fuzz.csv", "v1"
    layout, data_offset, data_line = _layout(gen, url, version)
    start = Checkpoint(data_offset, 0, data_line, url, version)
    good, bad = _worker_messages(gen, layout, start, read_bytes=block,
                                 max_bytes=max(block, 16), max_rows=chunk_rows)
    report = verify_messages(io.BytesIO(gen.data), good, gen.fmt(), source_url=url,
                             id_prefix=layout.id_prefix, dead_letters=bad)
    assert report.ok and report.duplicates == 0, f"{report.summary()}\nfile: {gen.data!r}"


@settings(max_examples=200, deadline=None)
@given(gen=csv_files(max_rows=40), pick=st.integers(0, 10_000), block=st.integers(1, 64))
def test_resume_from_any_record_boundary(gen: GeneratedCsv, pick: int, block: int) -> None:
    """A run resumed from any checkpoint a worker could have saved (a record boundary after the
    header) publishes exactly the rows after it, with the ids and lines of a full run."""
    url, version = "file:///fuzz.csv", "v1"
    layout, data_offset, data_line = _layout(gen, url, version)
    rows: list[GoodRow | BadRow] = list(parse_source(io.BytesIO(gen.data), gen.fmt(), url))
    # Candidate resume points: the data start, and the end of every record after it.
    bounds = [(data_offset, data_line, 0)]
    n = 0
    for rec in records(io.BytesIO(gen.data), gen.fmt()):
        end = rec.offset + len(rec.raw)
        if end <= data_offset:
            continue
        if rec.raw.strip(b"\r\n"):
            n += 1
        bounds.append((end, rec.line + rec.raw.count(b"\n"), n))
    offset, line, row = bounds[pick % len(bounds)]
    start = Checkpoint(offset, row, line, url, version, Counters())
    good, bad = _worker_messages(gen, layout, start, read_bytes=block, max_bytes=2 << 20,
                                 max_rows=3)
    report = verify_messages(io.BytesIO(gen.data), good, gen.fmt(), source_url=url,
                             id_prefix=layout.id_prefix, dead_letters=bad)
    expected_good = sum(1 for r in rows if isinstance(r, GoodRow) and r.offset >= offset)
    expected_bad = sum(1 for r in rows if isinstance(r, BadRow) and r.offset >= offset)
    detail = f"{report.summary()}\nresume at {offset} (line {line}); file: {gen.data!r}"
    # Rows before the checkpoint are missing by design; nothing else may be.
    assert report.rows_unexpected == 0 and report.rows_mismatched == 0, detail
    assert report.rows_present == expected_good, detail
    assert report.dlq_unexpected == 0 and report.dlq_mismatched == 0, detail
    assert report.bad_expected - report.dlq_missing == expected_bad, detail


def test_verifier_flags_loss_foreign_and_duplicates(tmp_path: Path) -> None:
    """The verifier itself: a lost row, a foreign message, a changed value and a duplicate."""
    path = tmp_path / "v.csv"
    path.write_bytes(b"id,name\n1,a\n2,b\n3,c\n4,\xff\n")
    url = str(path)
    prefix = event_id_prefix(url, local_version(url))
    with path.open("rb") as f:
        rows = [r for r in parse_source(f, CsvFormat(), url) if isinstance(r, GoodRow)]

    def msg(r: GoodRow, **change: Any) -> _Msg:
        return _Msg(orjson.dumps({**r.values, "_id": f"{prefix}-{r.offset}", **change}))

    full = [msg(r) for r in rows]
    ok = verify_messages(url, [*full, full[0]], reported_bad=1)
    assert ok.ok and ok.rows_expected == 3 and ok.duplicates == 1 and ok.bad_expected == 1
    lost = verify_messages(url, full[1:])
    assert not lost.ok and lost.rows_missing == 1
    foreign = verify_messages(url, [*full, _Msg(orjson.dumps({"_id": f"{prefix}-999"}))])
    assert not foreign.ok and foreign.rows_unexpected == 1
    changed = verify_messages(url, [msg(rows[0], name="z"), *full[1:]])
    assert not changed.ok and changed.rows_mismatched == 1
    wrong_bad = verify_messages(url, full, reported_bad=0)
    assert not wrong_bad.ok
    dlq_missing = verify_messages(url, full, dead_letters=[])
    assert not dlq_missing.ok and dlq_missing.dlq_missing == 1


def test_generator_is_what_python_csv_reads() -> None:
    """Sanity of the oracle: the verifier's parse of a known file."""
    data = b'\xef\xbb\xbfa,b\r\n1,"x\r\ny"\r\n\r\n2,"q""q"\r\n3\r\n'
    rows = list(parse_source(io.BytesIO(data), CsvFormat(), "u"))
    assert [type(r).__name__ for r in rows] == ["GoodRow", "GoodRow", "BadRow"]
    first = rows[0]
    assert isinstance(first, GoodRow) and first.values["b"] == "x\r\ny" and first.line == 2
    assert first.offset == len(b"\xef\xbb\xbfa,b\r\n")
    assert isinstance(rows[1], GoodRow) and rows[1].values["b"] == 'q"q' and rows[1].line == 5


pytestmark = pytest.mark.timeout(600)
