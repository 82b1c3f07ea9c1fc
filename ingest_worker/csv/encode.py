"""A chunk of records to Kafka messages: the compiled encoder, and Python's csv for the rest.

The compiled core (``csvkafka_core.Encoder``) encodes every record that is plainly valid in
the doubled-quote dialect, UTF-8: the bulk of any file. A record it has the slightest doubt
about (a quote inside an unquoted field, a bare CR, invalid UTF-8, a NUL, a typed value
quoted with doubled quotes, or one that does not convert and is not ASCII) keeps its slot in
the batch and comes here, to Python's own csv module, which splits it or says exactly what is
wrong with it; its fields then go back to the same encoder (``encode_fields``: the same
conversion rules and bytes, JSON or Avro), which names the column a value does not convert
for. A record the core split without doubt but whose field count is wrong or whose value does
not convert is a bad row at once, worded by the core as :func:`fields_reason` and
:func:`column_reason` word the exact path's: Python's csv would split it the same, so the exact
path could only say the same. Every bad row, whoever found it, is kept in the batch
(``Batch.set_aside``), with its kind (what the log counts by): the producer sends its dead
letter with the batch's messages. Dialects with an escape character, and encodings other than
UTF-8, go the exact path record by record.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

from csvkafka_core import Batch, Encoder

from ingest_worker.badrows import BadRow, BadRows
from ingest_worker.csv.chunks import Chunk
from ingest_worker.csv.dialect import Layout, is_blank_record, strip_eol


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


def fields_reason(expected: int, found: int) -> str:
    return f"expected {expected} fields, found {found}"


def column_kind(column: str, why: str) -> str:
    """What rows whose value fails the same way share: the reason without the value."""
    return f"column {column!r}: {why}"


def column_reason(column: str, why: str, value: str) -> str:
    return f"{column_kind(column, why)}: {value!r}"


class Bad(NamedTuple):
    """Why the exact path sets a record aside, and the kind of that reason (None: the core
    takes it from the reason's shape)."""

    reason: str
    kind: str | None = None


def bad_rows(batch: Batch, limit: int | None = None) -> BadRows:
    """The batch's bad rows, with the first ``limit`` as rows (every one: None)."""
    count, last_line, kinds = batch.bad_summary()
    if not count:
        return BadRows()
    rows = [BadRow(*t) for t in batch.bad_rows(limit)] if limit != 0 else []
    return BadRows(count, last_line, kinds, rows)


@dataclass
class Encoded:
    """The messages of a chunk (ready to send) and its bad rows (in the batch)."""

    batch: Batch
    rows_read: int
    keyed: bool = True

    def bad(self, limit: int | None = None) -> BadRows:
        return bad_rows(self.batch, limit)

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def values(self) -> list[bytes]:
        return self.batch.message_values()

    @property
    def keys(self) -> list[str] | None:
        if not self.keyed:
            return None
        return [(k or b"").decode() for k in self.batch.message_keys()]


class ChunkEncoder:
    """Encodes chunks for one layout (one per worker; the compiled encoder is reentrant)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dialect: dict[str, Any] = layout.python_dialect()
        types = [layout.type_of(c) for c in layout.columns]
        self.key_idx = [layout.columns.index(c) for c in layout.key_columns]
        self.vectorised = layout.vectorised and layout.encoding == "utf-8"
        self.encoder = Encoder(
            list(layout.columns),
            [t.core() for t in types],
            self.key_idx,
            layout.delimiter_byte,
            layout.quote_byte,
            layout.source_url if layout.include_metadata else None,
            layout.id_prefix if layout.include_event_id else None,
            avro=layout.value_format == "avro",
            frame=layout.frame,
            order=list(layout.order) if layout.order is not None else None,
            key_frame=layout.key_frame,
        ) if layout.columns else None

    def encode(self, chunk: Chunk) -> Encoded:
        if self.encoder is None or not self.vectorised:
            return self._encode_exact(chunk)
        data = chunk.data
        batch = self.encoder.encode(data, chunk.start_offset, chunk.start_line, chunk.start_row)
        for slot, start, end, line, row in batch.exact():
            rec = data[start:end]
            offset = chunk.start_offset + start
            got = self.exact_record(rec, line, offset)
            if isinstance(got, Bad):
                batch.reject(slot)
                batch.set_aside(line, chunk.start_row + row, offset, got.reason, strip_eol(rec),
                                kind=got.kind)
            else:
                batch.fill(slot, *got)
        return Encoded(batch, batch.rows_read, keyed=bool(self.key_idx))

    def _encode_exact(self, chunk: Chunk) -> Encoded:
        """Every record through Python's csv (records cut by the reader: ``chunk.records``)."""
        values: list[bytes] = []
        keys: list[bytes] = []
        rows: list[int] = []
        lines: list[int] = []
        offsets: list[int] = []
        bad: list[tuple[int, int, int, Bad, bytes]] = []
        rows_read = 0
        line = chunk.start_line
        pos = 0
        for rec in chunk.records(self.layout):
            start, pos = pos, pos + len(rec)
            rec_line, line = line, line + rec.count(b"\n")
            if is_blank_record(rec):
                continue
            rows_read += 1
            offset = chunk.start_offset + start
            got = self.exact_record(rec, rec_line, offset)
            if isinstance(got, Bad):
                bad.append((rec_line, chunk.start_row + rows_read, offset, got, strip_eol(rec)))
                continue
            values.append(got[0])
            keys.append(got[1] or b"")
            rows.append(rows_read)
            lines.append(rec_line)
            offsets.append(offset)
        batch = Batch.from_messages(values, keys if self.key_idx else None, rows, lines, offsets,
                                    rows_read)
        for line, row, offset, why, raw in bad:
            batch.set_aside(line, row, offset, why.reason, raw, kind=why.kind)
        return Encoded(batch, rows_read, keyed=bool(self.key_idx))

    def exact_record(self, rec: bytes, line: int, offset: int) -> tuple[bytes, bytes | None] | Bad:
        """One record with Python's csv: its (value, key), or why it is a bad row."""
        layout = self.layout
        raw = strip_eol(rec)
        try:
            text = raw.decode(layout.encoding)
        except UnicodeDecodeError as err:
            return Bad(f"invalid {layout.encoding} at byte {err.start} of the row")
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), **self.dialect))
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                return Bad("unterminated quoted field at end of file")
            return Bad(f"malformed CSV: {err}")
        if len(rows) != 1:
            return Bad(f"malformed CSV: one record expected, found {len(rows)}")
        fields = rows[0]
        columns = layout.columns
        if len(fields) != len(columns):
            return Bad(fields_reason(len(columns), len(fields)))
        assert self.encoder is not None  # a file with no columns has no rows to encode
        value, key, refused = self.encoder.encode_fields(fields, line, offset)
        if refused is not None:
            ci, reason = refused
            column = columns[ci]
            return Bad(column_reason(column, reason, fields[ci]), column_kind(column, reason))
        assert value is not None
        return value, key
