"""The file cut into chunks of whole records, each numbered and placed (offset, row, line).

Chunk boundaries depend only on the bytes and the sizes, so a resumed run cuts the same way from
the same offset (event ids come from byte offsets and never depend on the cut anyway).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from csvkafka_core import cut

from ingest_worker.checkpoint import Checkpoint
from ingest_worker.csv.dialect import Layout, is_blank_record, python_records


class SourceReadError(Exception):
    """The source could not be read to its end as it was at the start (a fatal error)."""


@dataclass(frozen=True)
class Chunk:
    """Consecutive records of the file, cut on record boundaries."""

    seq: int
    data: bytes
    start_offset: int
    start_row: int
    start_line: int
    rows: int
    """Data rows (records that are not blank lines)."""
    newlines: int
    record_lens: tuple[int, ...] | None = None
    """The records' lengths when Python's csv cut them (dialects with an escape character)."""

    @property
    def end_offset(self) -> int:
        return self.start_offset + len(self.data)

    @property
    def end_row(self) -> int:
        return self.start_row + self.rows

    @property
    def end_line(self) -> int:
        return self.start_line + self.newlines

    def records(self, layout: Layout) -> Iterator[bytes]:
        """The chunk's records, blank lines included."""
        if self.record_lens is not None:
            pos = 0
            for n in self.record_lens:
                yield self.data[pos : pos + n]
                pos += n
            return
        pos = 0
        for end, _, _ in cut(self.data, layout.delimiter_byte, layout.quote_byte, True, 1, 1):
            yield self.data[pos:end]
            pos = end


def cut_chunks(
    stream: IO[bytes],
    layout: Layout,
    start: Checkpoint,
    *,
    max_rows: int,
    max_bytes: int,
    read_bytes: int = 1 << 20,
    max_record_bytes: int = 64 << 20,
) -> Iterator[Chunk]:
    """Reads ``stream`` from ``start`` and yields its chunks, in order."""
    if not layout.vectorised:
        yield from _cut_python(stream, layout, start, max_rows, max_bytes)
        return
    offset, row, line, seq = start.byte_offset, start.row, start.line, 0
    carry = b""
    while True:
        block = stream.read(read_bytes)
        eof = not block
        buf = carry + block if carry else block
        pos = 0
        for end, rows, newlines in cut(buf, layout.delimiter_byte, layout.quote_byte, eof,
                                       max_rows, max_bytes):
            data = buf[pos:end]
            yield Chunk(seq, data, offset, row, line, rows, newlines)
            offset, row, line, seq, pos = offset + len(data), row + rows, line + newlines, \
                seq + 1, end
        carry = buf[pos:]
        if eof:
            return
        if len(carry) > max_record_bytes:
            raise SourceReadError(f"record at line {line} is longer than {max_record_bytes} "
                                  "bytes (an unterminated quote?)")


def _cut_python(
    stream: IO[bytes], layout: Layout, start: Checkpoint, max_rows: int, max_bytes: int
) -> Iterator[Chunk]:
    offset, row, line, seq = start.byte_offset, start.row, start.line, 0
    recs: list[bytes] = []
    rows = size = newlines = 0
    reader = io.BufferedReader(stream, 1 << 20) if isinstance(stream, io.RawIOBase) else stream
    for rec, nl in python_records(reader, layout):
        recs.append(rec)
        rows += 0 if is_blank_record(rec) else 1
        size += len(rec)
        newlines += nl
        if rows >= max_rows or size >= max_bytes:
            yield Chunk(seq, b"".join(recs), offset, row, line, rows, newlines,
                        tuple(len(r) for r in recs))
            offset, row, line, seq = offset + size, row + rows, line + newlines, seq + 1
            recs, rows, size, newlines = [], 0, 0, 0
    if recs:
        yield Chunk(seq, b"".join(recs), offset, row, line, rows, newlines,
                    tuple(len(r) for r in recs))


class SourceReader(io.RawIOBase):
    """The source stream as the reader sees it: never past the size recorded at the start, and
    read errors turned into clear messages.

    A file that grows while it is read would otherwise hand us a half-written last line; its
    snapshot (the size versioned at the start) is what this run ingests. If that snapshot ends
    in the middle of a line and the file has grown past it, the run fails ("source changed
    while reading") rather than publish a torn row.
    """

    def __init__(self, raw: IO[bytes], url: str, compressed: bool, limit: int | None) -> None:
        super().__init__()
        self.raw = raw
        self.url = url
        self.compressed = compressed
        self.remaining = limit
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 30
        if self.remaining is not None:
            if self.remaining <= 0:
                self._check_growth()
                return b""
            n = min(n, self.remaining)
        try:
            block = self.raw.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise SourceReadError(
                f"the compressed source {self.url} is truncated or corrupt: {e}") from e
        except OSError as e:
            what = "the compressed source" if self.compressed else "the source"
            raise SourceReadError(f"reading {what} {self.url} failed: {e}") from e
        except Exception as e:  # decompressors raise their own types (zstd, lzma)
            if self.compressed:
                raise SourceReadError(
                    f"the compressed source {self.url} is truncated or corrupt: {e!r}") from e
            raise
        if block:
            self.last = block[-1:]
            if self.remaining is not None:
                self.remaining -= len(block)
        elif self.remaining is not None:
            raise SourceReadError(f"source changed while reading: {self.url} is shorter than "
                                  f"the {self.remaining} more bytes expected")
        return block

    def _check_growth(self) -> None:
        if self.last in (b"", b"\n"):
            return  # the snapshot ends on a line end: its records are whole
        try:
            more = self.raw.read(1)
        except OSError:
            more = b""
        if more:
            raise SourceReadError(f"source changed while reading: {self.url} grew past the "
                                  "size it had at the start, in the middle of a line")
