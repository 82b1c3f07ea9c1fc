"""Turns a chunk of CSV bytes into Kafka message values (JSON) and keys.

Two engines give the same output:

* the fast path: polars parses the whole chunk in native code (every column as a string), casts
  the typed columns vectorised, adds the metadata columns and writes NDJSON, one line per row;
* the exact path: Python's csv module, record by record, which can say precisely which row is
  bad and why (wrong field count, invalid encoding, unterminated quote, value that does not
  convert) while the good rows around it still go out.

The fast path is validated against the byte scan (row count, field count of every record) and
anything unexpected (an exception, invalid UTF-8, a value that does not convert) sends the chunk
to the exact path. The conversion rules live in :mod:`ingest_worker.dialect` and both engines
implement them identically.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl

from ingest_worker.dialect import (
    BOOL,
    FALSE_WORDS,
    FLOAT,
    FLOAT_RE,
    INT,
    INT_RE,
    STRING,
    TIMESTAMP_RE,
    TRUE_WORDS,
    ConversionError,
    Layout,
    convert,
    event_id,
)
from ingest_worker.scan import CR, NL, ChunkRecords, IntArray, Scan, chunk_records


def _raise_field_size_limit() -> None:
    """Python csv refuses fields over 128 KiB by default; records are bounded by the reader."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than Py_ssize_t (Windows)
            limit //= 2


_raise_field_size_limit()


@dataclass(frozen=True)
class BadRow:
    line: int
    """Physical line (1-based) where the record starts."""
    row: int
    """Data row number (1-based, header and blank lines excluded)."""
    offset: int
    """Byte offset of the record in the (uncompressed) file."""
    reason: str
    raw: bytes
    """The record's bytes, without its line terminator."""


@dataclass
class ParsedChunk:
    """The messages of a chunk as one buffer (NDJSON: one line per message) plus boundaries.

    One buffer, not a list of bytes objects: the native producer hands it to librdkafka in one
    call, and memory stays one allocation per chunk.
    """

    payload: bytes
    starts: IntArray
    lens: IntArray
    key_buf: bytes | None
    key_starts: IntArray | None
    key_lens: IntArray | None
    rows_read: int
    bad: list[BadRow] = field(default_factory=list)
    fast: bool = True

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def values(self) -> list[bytes]:
        p = self.payload
        return [p[s : s + n] for s, n in zip(self.starts.tolist(), self.lens.tolist(), strict=True)]

    @property
    def keys(self) -> list[str] | None:
        if self.key_buf is None or self.key_starts is None or self.key_lens is None:
            return None
        k = self.key_buf
        return [k[s : s + n].decode() for s, n in
                zip(self.key_starts.tolist(), self.key_lens.tolist(), strict=True)]

    @classmethod
    def from_lists(
        cls, values: list[bytes], keys: list[str] | None, rows_read: int, bad: list[BadRow],
        fast: bool,
    ) -> ParsedChunk:
        payload, starts, lens = _join(values)
        if keys is None:
            return cls(payload, starts, lens, None, None, None, rows_read, bad, fast)
        kbuf, kstarts, klens = _join([k.encode() for k in keys])
        return cls(payload, starts, lens, kbuf, kstarts, klens, rows_read, bad, fast)


def _join(items: list[bytes]) -> tuple[bytes, IntArray, IntArray]:
    lens = np.fromiter((len(x) for x in items), dtype=np.int64, count=len(items))
    return b"".join(items), np.cumsum(lens) - lens, lens


def lines_of(buf: bytes) -> tuple[IntArray, IntArray]:
    """(starts, lengths) of the newline-terminated lines of an NDJSON buffer."""
    view = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(view == 0x0A).astype(np.int64)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends - starts


@dataclass(frozen=True)
class Spans:
    """Records cut by the reader itself (dialects the numpy scan cannot handle)."""

    starts: IntArray
    ends: IntArray
    lines: IntArray


def parse_chunk(
    data: bytes,
    layout: Layout,
    start_offset: int,
    start_row: int,
    start_line: int,
    spans: Spans | None = None,
    scan: Scan | None = None,
) -> ParsedChunk:
    """Parses one chunk (which starts and ends on record boundaries). ``spans`` are the records
    the reader cut itself (escape-character dialects), ``scan`` the reader's numpy scan."""
    if spans is not None:
        return parse_exact(data, layout, spans, None, start_offset, start_row, start_line)
    recs = chunk_records(data, layout.quote_byte, layout.delimiter_byte, per_record_fields=False,
                         scan=scan)
    fast = parse_fast(data, layout, recs, start_offset, start_line)
    if fast is not None:
        return fast
    sp = Spans(recs.starts, recs.ends, recs.lines)
    return parse_exact(data, layout, sp, recs, start_offset, start_row, start_line)


# --- the fast path ------------------------------------------------------------------------------


def _typed_expr(name: str, ctype: str) -> tuple[pl.Expr, pl.Expr]:
    """(converted value, conversion failed) for one typed column, per the rules in dialect."""
    raw = pl.col(name).str.strip_chars()
    empty = raw == ""
    if ctype == INT:
        ok = raw.str.contains(INT_RE)
        val = raw.cast(pl.Int64, strict=False)
        bad = ~empty & (~ok | val.is_null())
    elif ctype == FLOAT:
        ok = raw.str.contains(FLOAT_RE)
        val = raw.cast(pl.Float64, strict=False)
        bad = ~empty & (~ok | val.is_null())
    elif ctype == BOOL:
        low = raw.str.to_lowercase()
        is_true = low.is_in(list(TRUE_WORDS))
        is_false = low.is_in(list(FALSE_WORDS))
        val = pl.when(is_true).then(True).when(is_false).then(False).otherwise(None)
        bad = ~empty & ~is_true & ~is_false
    else:  # timestamp: validated, kept as the (trimmed) string
        val = raw
        bad = ~empty & ~raw.str.contains(TIMESTAMP_RE)
    return pl.when(empty).then(None).otherwise(val).alias(name), bad


def parse_fast(
    data: bytes, layout: Layout, recs: ChunkRecords, start_offset: int, start_line: int
) -> ParsedChunk | None:
    """The vectorised path, or None when the chunk needs the exact path."""
    n = len(recs)
    ncols = len(layout.columns)
    if n == 0:
        return ParsedChunk.from_lists([], None if not layout.key_columns else [], 0, [], True)
    if recs.open_quote or recs.literal_quotes:
        return None  # a quote that is data inside an unquoted field: the engines disagree
    if recs.fields is not None:
        if bool(np.any(recs.fields != ncols)):
            return None
    # polars rejects a record with too many fields, so with the right total none has too few.
    elif recs.delimiters != n * (ncols - 1):
        return None
    if _has_bare_cr(data):
        return None  # a lone CR: polars reads it as data, Python csv as a malformed record
    try:
        if layout.encoding != "utf-8":
            data = data.decode(layout.encoding).encode("utf-8")
    except UnicodeDecodeError:
        return None
    if data.startswith(codecs.BOM_UTF8):
        # polars drops a BOM at the start of its input, so output would depend on where chunks
        # are cut. Only the file's own BOM is one, and read_header already skipped it: a U+FEFF
        # starting a chunk is data, which the exact path keeps.
        return None
    try:
        df = pl.read_csv(
            data,
            has_header=False,
            schema=dict.fromkeys(layout.columns, pl.String),
            separator=layout.delimiter,
            quote_char=layout.quote_char,
            encoding="utf8",
            empty_string_is_null=False,
            raise_if_empty=False,
            truncate_ragged_lines=False,  # too many fields must raise (see the check above)
        )
    except Exception:  # any engine complaint (invalid UTF-8, ragged row): the exact path decides
        return None
    if recs.keep is not None:
        # polars turns blank lines into rows of empty strings; the scan knows which they are.
        if df.height != len(recs.keep):
            return None
        df = df.filter(pl.Series(recs.keep))
    if df.height != n:
        return None
    key_buf: bytes | None = None
    key_starts: IntArray | None = None
    key_lens: IntArray | None = None
    if layout.key_columns:
        key_expr = (
            pl.col(layout.key_columns[0])
            if len(layout.key_columns) == 1
            else pl.concat_str([pl.col(c) for c in layout.key_columns], separator="|")
        )
        ks = df.select(key_expr).to_series()
        key_lens = ks.str.len_bytes().to_numpy().astype(np.int64)
        key_buf = _joined(ks)
        key_starts = np.cumsum(key_lens) - key_lens
    typed = [(c, t) for c, t in layout.column_types.items() if t != STRING]
    if not typed and _plain_strings(data, layout, recs):
        tmpl = _templated(df, layout, recs, start_offset, start_line)
        if tmpl is not None:
            payload, starts, lens = tmpl
            return ParsedChunk(payload, starts, lens, key_buf, key_starts, key_lens, rows_read=n)
    if typed:
        exprs = [_typed_expr(c, t) for c, t in typed]
        if exprs:
            bad_any = pl.any_horizontal([b for _, b in exprs]).any()
            if df.select(bad_any).item():
                return None
            df = df.with_columns([v for v, _ in exprs])
    if layout.include_metadata:
        df = df.with_columns(
            pl.lit(layout.source_url).alias("_source"),
            pl.Series("_line", recs.lines + start_line),
        )
    if layout.include_event_id:
        offsets = recs.starts + start_offset
        df = df.with_columns(
            pl.concat_str(
                [pl.lit(layout.id_prefix + "-"), pl.Series("_o", offsets).cast(pl.String)]
            ).alias("_id"),
        )
    out = io.BytesIO()
    df.write_ndjson(out)
    payload = out.getvalue()
    starts, lens = lines_of(payload)
    if len(starts) != n:
        return None
    return ParsedChunk(payload, starts, lens, key_buf, key_starts, key_lens, rows_read=n)


def _plain_strings(data: bytes, layout: Layout, recs: ChunkRecords) -> bool:
    """Whether no value of the chunk needs JSON escaping: no backslash, no quote inside a value
    (a doubled quote), no control character other than the records' line terminators."""
    if b"\\" in data:
        return False
    if layout.quote_char == '"':
        if recs.doubled_quotes:  # b'""' in data, from the scan's quote positions
            return False
    elif b'"' in data:
        return False
    # One pass: control bytes. Records end in LF or CRLF (a bare CR went to the exact path),
    # so with as many control bytes as terminator bytes there is none inside a value.
    view = np.frombuffer(data, dtype=np.uint8)
    ctrl = view[view < 0x20]
    lf = int(np.count_nonzero(ctrl == NL))
    records = len(recs.keep) if recs.keep is not None else len(recs)
    if lf != records - (0 if data.endswith(b"\n") else 1):
        return False  # a newline inside a quoted value
    return len(ctrl) == lf + int(np.count_nonzero(ctrl == CR))


def _templated(
    df: pl.DataFrame, layout: Layout, recs: ChunkRecords, start_offset: int, start_line: int
) -> tuple[bytes, IntArray, IntArray] | None:
    """The JSON lines built as one string expression (values known to need no escaping).

    Much cheaper than ``write_ndjson`` plus a newline scan: the constant parts (names, the
    source URL, the id prefix) are literals, the per-row numbers are formatted by polars, and the
    message lengths come from the string lengths.
    """
    def js(text: str) -> str:
        return orjson.dumps(text).decode()

    if not layout.columns:
        return None
    parts: list[pl.Expr | pl.Series] = []
    text = "{"  # literal text before the next value
    for i, name in enumerate(layout.columns):
        parts += [pl.lit(f'{text}{"," if i else ""}{js(name)}:"'), pl.col(name)]
        text = '"'
    if layout.include_metadata:
        parts += [pl.lit(f'{text},"_source":{js(layout.source_url)},"_line":'),
                  pl.Series("_l", recs.lines + start_line).cast(pl.String)]
        text = ""
    if layout.include_event_id:
        parts += [pl.lit(f'{text},"_id":{js(layout.id_prefix + "-")[:-1]}'),
                  pl.Series("_o", recs.starts + start_offset).cast(pl.String)]
        text = '"'
    parts.append(pl.lit(text + "}"))
    ser = df.select(pl.concat_str(parts).alias("v")).to_series()
    if ser.null_count():
        return None
    lens = ser.str.len_bytes().to_numpy().astype(np.int64)
    payload = _joined(ser)
    if int(lens.sum()) != len(payload):
        return None
    return payload, np.cumsum(lens) - lens, lens


def _joined(ser: pl.Series) -> bytes:
    """The strings of ``ser`` end to end, as UTF-8 bytes (straight from polars' buffer: no
    round trip through a Python str)."""
    joined = ser.str.join("").cast(pl.Binary).item()
    return bytes(joined or b"")


def _has_bare_cr(data: bytes) -> bool:
    """A CR not followed by LF (the final byte of the file included: the exact path decides)."""
    if b"\r" not in data:
        return False
    view = np.frombuffer(data, dtype=np.uint8)
    cr = np.flatnonzero(view == CR)
    nxt = view[np.minimum(cr + 1, len(view) - 1)]
    return bool(np.any((cr + 1 >= len(view)) | (nxt != NL)))


# --- the exact path -----------------------------------------------------------------------------


def is_blank_record(raw: bytes) -> bool:
    """An empty line: skipped, not a row (the scan's blank_mask agrees for the fast path)."""
    return not raw.strip(b"\r\n")


def _strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def parse_exact(
    data: bytes,
    layout: Layout,
    spans: Spans,
    recs: ChunkRecords | None,
    start_offset: int,
    start_row: int,
    start_line: int,
) -> ParsedChunk:
    """Record by record with Python's csv module: exact reasons for every bad row."""
    dialect: dict[str, Any] = layout.python_dialect()
    columns = layout.columns
    ncols = len(columns)
    types = [(i, layout.column_types.get(c, STRING)) for i, c in enumerate(columns)]
    types = [(i, t) for i, t in types if t != STRING]
    key_idx = [columns.index(c) for c in layout.key_columns]
    values: list[bytes] = []
    keys: list[str] | None = [] if key_idx else None
    bad: list[BadRow] = []
    starts, ends, lines = spans.starts.tolist(), spans.ends.tolist(), spans.lines.tolist()
    nrec = len(starts)
    rows_read = 0
    for i in range(nrec):
        s, e = starts[i], ends[i]
        rec = data[s:e]
        if recs is None and is_blank_record(rec):
            continue  # blank line (the numpy scan already dropped them from `recs`)
        raw = _strip_eol(rec)
        rows_read += 1
        line = start_line + lines[i]
        offset = start_offset + s

        row = start_row + rows_read

        def reject(
            reason: str, line: int = line, row: int = row, offset: int = offset, raw: bytes = raw
        ) -> None:
            bad.append(BadRow(line, row, offset, reason, raw))

        if recs is not None and recs.open_quote and i == nrec - 1:
            reject("unterminated quoted field at end of file")
            continue
        try:
            text = raw.decode(layout.encoding)
        except UnicodeDecodeError as err:
            reject(f"invalid {layout.encoding} at byte {err.start} of the row")
            continue
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), **dialect))
        except csv.Error as err:
            reject(f"malformed CSV: {err}")
            continue
        if len(rows) != 1:
            reject(f"malformed CSV: one record expected, found {len(rows)}")
            continue
        fields = rows[0]
        if len(fields) != ncols:
            reject(f"expected {ncols} fields, found {len(fields)}")
            continue
        obj: dict[str, Any] = dict(zip(columns, fields, strict=True))
        try:
            for ci, ctype in types:
                obj[columns[ci]] = convert(fields[ci], ctype)
        except ConversionError as err:
            reject(f"column {columns[ci]!r}: {err}")
            continue
        if layout.include_metadata:
            obj["_source"] = layout.source_url
            obj["_line"] = line
        if layout.include_event_id:
            obj["_id"] = event_id(layout.id_prefix, offset)
        values.append(orjson.dumps(obj))
        if keys is not None:
            keys.append("|".join(fields[k] for k in key_idx))
    return ParsedChunk.from_lists(values, keys, rows_read, bad, fast=False)
