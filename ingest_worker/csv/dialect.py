"""The CSV dialect and the row layout, resolved once from the spec and the file's header.

The conversion rules of typed columns live in the compiled core (``core/src/types.rs``), used by
both encoding paths; the column types themselves are :mod:`ingest_worker.schema.columns`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from csvkafka_core import cut

from ingest_worker.schema.columns import STRING, ColumnType

if TYPE_CHECKING:
    from ingest_worker.api.spec import CsvFormat, CsvIngestionSpec

BOM = codecs.BOM_UTF8


class ConfigError(Exception):
    """The spec cannot describe this file (e.g. a key column it does not have)."""


def normalize_encoding(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError as e:
        raise ConfigError(f"unknown encoding {encoding!r}") from e
    # The byte scan needs newline, quote and the usual delimiters to be single ASCII bytes.
    if "\n,;\t|\"'".encode(name, errors="replace") != b"\n,;\t|\"'":
        raise ConfigError(f"encoding {encoding!r} is not ASCII-compatible; only such are supported")
    return "utf-8" if name == "utf-8-sig" else name


def event_id_prefix(source_url: str, source_version: str | None) -> str:
    """The per-file half of every event id: a hash of the source's identity."""
    ident = f"{source_url}\0{source_version or ''}".encode()
    return hashlib.blake2b(ident, digest_size=8).hexdigest()


def event_id(prefix: str, byte_offset: int) -> str:
    """Deterministic id of the row starting at ``byte_offset``: stable across resumes."""
    return f"{prefix}-{byte_offset}"


def strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def is_blank_record(raw: bytes) -> bool:
    """An empty line: skipped, not a row."""
    return not raw.strip(b"\r\n")


@dataclass(frozen=True)
class Layout:
    """How each record becomes a message; built once, sent to every worker."""

    columns: tuple[str, ...]
    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    encoding: str = "utf-8"
    column_types: Mapping[str, ColumnType | str] = field(default_factory=dict)
    """Each typed column's type (a plain type name stands for its default options)."""
    key_columns: tuple[str, ...] = ()
    include_event_id: bool = True
    include_metadata: bool = False
    source_url: str = ""
    id_prefix: str = ""
    value_format: str = "json"
    """json, avro or jsonSchema."""
    order: tuple[int, ...] | None = None
    """The columns (by index) in the order the value writes them; None: the file's order."""
    frame: bytes = b""
    """Written before every value: the schema's id in Confluent's wire format, or nothing."""
    key_frame: bytes | None = None
    """Avro keys: the key schema's framing."""

    def type_of(self, column: str) -> ColumnType:
        t = self.column_types.get(column, STRING)
        return t if isinstance(t, ColumnType) else ColumnType.of(t)

    @property
    def vectorised(self) -> bool:
        """Whether the compiled core finds record boundaries (doubled-quote dialect)."""
        return self.escape_char is None

    @property
    def quote_byte(self) -> int | None:
        return None if self.quote_char is None else ord(self.quote_char)

    @property
    def delimiter_byte(self) -> int:
        return ord(self.delimiter)

    def python_dialect(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quote_char,
            "escapechar": self.escape_char,
            "doublequote": self.escape_char is None,
            "quoting": csv.QUOTE_MINIMAL if self.quote_char else csv.QUOTE_NONE,
            "strict": True,
        }


def check_format(fmt: CsvFormat) -> None:
    for name, ch in (("delimiter", fmt.delimiter), ("quoteChar", fmt.quote_char)):
        if ch in ("\n", "\r") or ord(ch) > 127:
            raise ConfigError(f"{name} must be a single ASCII character other than a newline")
    if fmt.delimiter == fmt.quote_char:
        raise ConfigError("delimiter and quoteChar must differ")
    if not fmt.header and not fmt.columns:
        raise ConfigError("columns are required when the file has no header")


@dataclass(frozen=True)
class Header:
    """Where the data starts, and the header's column names (if the file has a header)."""

    names: tuple[str, ...] | None
    data_offset: int
    """Byte offset of the first data record (after BOM and header)."""
    data_line: int
    """Physical line number (1-based) at data_offset."""


def read_header(
    stream: IO[bytes], fmt: CsvFormat, encoding: str, max_bytes: int = 16 * 1024 * 1024
) -> Header:
    """Reads the BOM and, if the format has one, the header record from the start of the file.

    Blank lines before the header are skipped. Runs on every start, also when resuming mid-file,
    so the column names always come from the file itself.
    """
    buf = stream.read(65536)
    start = len(BOM) if encoding == "utf-8" and buf.startswith(BOM) else 0
    if not fmt.header:
        return Header(names=None, data_offset=start, data_line=1)
    quote = None if fmt.escape_char else ord(fmt.quote_char)
    pos, line = start, 1
    while True:
        for end in _record_ends(buf[pos:], fmt, quote):
            rec = buf[pos : pos + end]
            if rec.strip(b"\r\n"):
                names = _parse_header(rec, fmt, encoding)
                return Header(names, pos + end, line + rec.count(b"\n"))
            line += rec.count(b"\n")  # a blank line before the header
            pos += end
            break
        else:
            block = stream.read(1024 * 1024)
            if not block:
                rest = buf[pos:]
                if rest.strip(b"\r\n"):  # a header without a newline: header-only file
                    return Header(_parse_header(rest, fmt, encoding), len(buf), line)
                return Header(names=None, data_offset=len(buf), data_line=line)
            if len(buf) - pos > max_bytes:
                raise ConfigError(f"header record longer than {max_bytes} bytes")
            buf += block


def _record_ends(buf: bytes, fmt: CsvFormat, quote: int | None) -> list[int]:
    """Ends of the complete records at the start of ``buf`` (only the first one is used)."""
    if fmt.escape_char is None:
        first = cut(buf, ord(fmt.delimiter), quote, False, 1, 1)[:1]
        return [end for end, _, _ in first]
    layout = Layout(columns=(), delimiter=fmt.delimiter, quote_char=fmt.quote_char,
                    escape_char=fmt.escape_char)
    for start, rec, _ in _python_cut(io.BytesIO(buf), layout, final=False):
        return [start + len(rec)]
    return []


def _parse_header(rec: bytes, fmt: CsvFormat, encoding: str) -> tuple[str, ...]:
    try:
        text = rec.decode(encoding)
    except UnicodeDecodeError as e:
        raise ConfigError(f"header is not valid {encoding}: {e}") from e
    layout = Layout(columns=(), delimiter=fmt.delimiter, quote_char=fmt.quote_char,
                    escape_char=fmt.escape_char)
    dialect: dict[str, Any] = layout.python_dialect()
    rows = list(csv.reader(io.StringIO(text, newline=""), **dialect))
    if not rows:
        raise ConfigError("empty header")
    return tuple(name.strip() for name in rows[0])


def python_records(stream: IO[bytes], layout: Layout) -> Iterator[tuple[bytes, int]]:
    """(record bytes, newlines in it) for each record, cut by Python's csv module.

    The slow but general way to find boundaries, for dialects with an escape character. An
    unterminated quote at the end makes the rest of the file one (bad) record.
    """
    for start, raw, newlines in _python_cut(stream, layout, final=True):
        del start
        yield raw, newlines


def _python_cut(
    stream: IO[bytes], layout: Layout, final: bool
) -> Iterator[tuple[int, bytes, int]]:
    lines: list[bytes] = []

    def feed() -> Iterator[str]:
        for raw in stream:
            lines.append(raw)
            yield raw.decode("utf-8", errors="surrogateescape")

    # Not strict: an unterminated quote at the end must still come out as one record.
    dialect: dict[str, Any] = {**layout.python_dialect(), "strict": False}
    reader = csv.reader(feed(), **dialect)
    pos = 0
    while True:
        try:
            next(reader)
        except (StopIteration, csv.Error):
            break
        # csv.reader pulls exactly the lines of one record, so `lines` is this record.
        if not final and not lines[-1].endswith(b"\n"):
            return
        rec = b"".join(lines)
        yield pos, rec, rec.count(b"\n")
        pos += len(rec)
        lines.clear()
    if final and lines:
        rec = b"".join(lines)
        yield pos, rec, rec.count(b"\n")


def resolve_layout(
    spec: CsvIngestionSpec, header: Header, url: str, version: str | None, encoding: str
) -> Layout:
    """The columns and message layout, from the spec and the header (pure: unit-tested)."""
    fmt = spec.format
    columns = tuple(fmt.columns) if fmt.columns else (header.names or ())
    if len(set(columns)) != len(columns):
        dups = sorted({c for c in columns if columns.count(c) > 1})
        raise ConfigError(f"duplicate column names: {', '.join(dups)}")
    if columns:
        for what, names in (("key column", spec.kafka.key_columns),
                            ("typed column", list(fmt.column_types))):
            missing = [c for c in names if c not in columns]
            if missing:
                raise ConfigError(f"{what} not in the file's columns: {', '.join(missing)}")
        added = {"_source", "_line"} if spec.kafka.include_metadata else set()
        added |= {"_id"} if spec.kafka.include_event_id else set()
        reserved = added & set(columns)
        if reserved:
            raise ConfigError(f"columns clash with metadata fields: {', '.join(sorted(reserved))}")
    return Layout(
        columns=columns,
        delimiter=fmt.delimiter,
        quote_char=fmt.quote_char,
        escape_char=fmt.escape_char,
        encoding=encoding,
        column_types={c: ColumnType.of(t) for c, t in fmt.column_types.items()},
        key_columns=tuple(spec.kafka.key_columns),
        include_event_id=spec.kafka.include_event_id,
        include_metadata=spec.kafka.include_metadata,
        source_url=url,
        id_prefix=event_id_prefix(url, version),
    )
