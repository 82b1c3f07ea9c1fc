"""``csv-verify``: proves an ingestion lost nothing, by reading the topic back against its files.

The check is independent of the worker: the file is parsed again here with Python's ``csv``
module and this module's own record-offset tracking (not the worker's byte scan or parsers), and
every message is read back from Kafka. What is checked:

* every good row of the file is in the topic at least once, under its deterministic event id
  (``_id`` = ``<prefix>-<byte offset of the record in the decompressed file>``), with the content
  Python's ``csv`` reads for it (columns, ``_line``, ``_source``);
* no message in the topic is not a good row of the file (foreign ids, bad rows, other content);
* bad rows (wrong field count, invalid encoding, malformed quoting, unconvertible typed value)
  are accounted exactly: their count matches what the worker reported (when given), and with a
  dead-letter topic each is there with its raw bytes and offset, and nothing else is;
* duplicates (at-least-once redeliveries) are counted, not failed.

An ingestion of many files (a prefix or a glob, each file perhaps cut into byte-range shards) is
checked the same way, file by file, against one reading of the topic: a message belongs to the
file whose event-id prefix it carries (shards do not change ids, so they need no care here), a
dead letter to the file its ``source`` header names; messages and dead letters of no file are
foreign. The report holds the totals and one sub-report per file.

The rules of what a row is mirror the documented behaviour: a UTF-8 BOM is skipped, the first
non-blank record is the header (names trimmed), blank lines are not rows, a row must decode in
the file's encoding, parse as exactly one record with as many fields as there are columns, and
its typed columns must convert.

Usage as a library: :func:`verify` (reads Kafka) or :func:`verify_messages` (messages you read
yourself) check one file; :func:`verify_many` and :func:`verify_files` check many
(:class:`SourceFile` each). All return a :class:`VerifyReport`.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import datetime
import decimal
import gzip
import hashlib
import io
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlparse

import orjson

from ingest_worker.kafka import deadletter
from ingest_worker.plan.globs import listing_prefix, names_many
from ingest_worker.schema.columns import ColumnType
from ingest_worker.sources import CsvSource, SourceError, scheme_of
from ingest_worker.sources import local as local_files
from ingest_worker.sources.listing import list_files

METADATA = ("_source", "_line", "_id")
_BOM = b"\xef\xbb\xbf"
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?)?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")
_EXAMPLES = 10


class Message(Protocol):
    """The part of ``confluent_kafka.Message`` the verifier reads."""

    def value(self) -> bytes | None: ...

    def headers(self) -> list[tuple[str, bytes]] | None: ...


@dataclass(frozen=True)
class CsvFormat:
    """How to read the file: the same settings the ingestion was given."""

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    column_types: Mapping[str, str | Mapping[str, Any]] = field(default_factory=dict)
    """Column -> int, float, bool, decimal, date, timestamp (string is the default), or the
    spec's object form ({"type": "decimal", "scale": 2}, {"type": "timestamp", "format": ...,
    "timezone": "+01:00"}, "nullable")."""
    include_metadata: bool = False
    """Messages carry _source and _line (the ingestion's includeMetadata)."""
    schema_registry: str | None = None
    """Values are in Confluent's wire format (valueFormat avro or jsonSchema): decoded with the
    schema the registry holds for each value's id. Column types the schema knows (an inferred
    schema) need not be given."""


@dataclass
class VerifyReport:
    """What the topic holds compared with the file. ``ok`` is the verdict."""

    rows_expected: int = 0
    """Good rows in the file."""
    rows_present: int = 0
    """Good rows found at least once, with the right content."""
    rows_missing: int = 0
    rows_mismatched: int = 0
    """Good rows whose message content differs from the file's (counted as lost)."""
    rows_unexpected: int = 0
    """Messages that are not a good row of this file (foreign id, bad row, unreadable value)."""
    duplicates: int = 0
    """Messages beyond the first for the same row (at-least-once redelivery)."""
    messages: int = 0
    bad_expected: int = 0
    """Bad rows in the file (the independent parse's count)."""
    bad_reported: int | None = None
    """What the worker reported (rowsFailed), if given."""
    dlq_messages: int | None = None
    rows_refused: int = 0
    """Good rows Kafka refused (too large, invalid for the topic), found in the dead-letter
    topic instead: accounted for, not lost."""
    dlq_missing: int = 0
    dlq_unexpected: int = 0
    dlq_mismatched: int = 0
    dlq_duplicates: int = 0
    id_prefix: str | None = None
    missing_examples: list[str] = field(default_factory=list)
    unexpected_examples: list[str] = field(default_factory=list)
    mismatched_examples: list[str] = field(default_factory=list)
    bad_examples: list[str] = field(default_factory=list)
    dlq_examples: list[str] = field(default_factory=list)
    """Bad rows whose dead letter is missing or differs."""
    source_error: str | None = None
    """The source could not be read to its end (e.g. a truncated gzip), or not opened."""
    source: str | None = None
    """The file's URL, in a file's report."""
    foreign_messages: int = 0
    """Messages of no file (unreadable, or an id prefix no file has); part of rows_unexpected."""
    dlq_foreign: int = 0
    """Dead letters of no file (a source no file has, or no offset); part of dlq_unexpected."""
    foreign_examples: list[str] = field(default_factory=list)
    files: list[VerifyReport] = field(default_factory=list)
    """One report per file, in the order given (totals are their sums plus what is foreign)."""

    @property
    def lost(self) -> int:
        return self.rows_missing + self.rows_mismatched

    @property
    def failing_files(self) -> list[VerifyReport]:
        return [f for f in self.files if not f.ok]

    @property
    def ok(self) -> bool:
        dlq_ok = self.dlq_messages is None or (
            self.dlq_missing == 0 and self.dlq_unexpected == 0 and self.dlq_mismatched == 0
        )
        bad_ok = self.bad_reported is None or \
            self.bad_reported == self.bad_expected + self.rows_refused
        return (
            self.lost == 0
            and self.rows_unexpected == 0
            and dlq_ok
            and bad_ok
            and self.source_error is None
        )

    def summary(self) -> str:
        """One line of counts, then examples; with many files, a section per failing file."""
        many = len(self.files) > 1
        verdict = "OK" if self.ok else "FAILED"
        parts = [
            f"{verdict}: {self.rows_present}/{self.rows_expected} rows present",
            f"missing {self.rows_missing}",
            f"mismatched {self.rows_mismatched}",
            f"unexpected {self.rows_unexpected}",
            f"duplicates {self.duplicates} (of {self.messages} messages)",
            f"bad rows {self.bad_expected}"
            + ("" if self.bad_reported is None else f" (worker reported {self.bad_reported})"),
        ]
        if self.rows_refused:
            parts.append(f"refused by Kafka and dead-lettered {self.rows_refused}")
        if self.dlq_messages is not None:
            parts.append(
                f"dead letters {self.dlq_messages} (missing {self.dlq_missing}, unexpected "
                f"{self.dlq_unexpected}, mismatched {self.dlq_mismatched}, duplicates "
                f"{self.dlq_duplicates})"
            )
        if many:
            parts.append(f"files {len(self.files)} ({len(self.failing_files)} failing)")
            parts.append(f"messages of no file {self.foreign_messages}")
            if self.dlq_messages is not None:
                parts.append(f"dead letters of no file {self.dlq_foreign}")
        lines = [", ".join(parts)]
        if self.source_error:
            lines.append(f"source error: {self.source_error}")
        # With many files the examples are in each failing file's section, not repeated here.
        examples = [("of no file", self.foreign_examples)] if many else [
            ("missing", self.missing_examples),
            ("mismatched", self.mismatched_examples),
            ("unexpected", self.unexpected_examples),
            ("dead letters", self.dlq_examples),
        ]
        for title, ex in examples:
            if ex:
                lines.append(f"{title} (first {len(ex)}): " + "; ".join(ex))
        if many:
            for f in self.failing_files:
                first, *rest = f.summary().splitlines()
                lines.append(f"{f.source}: {first}")
                lines.extend("    " + line for line in rest)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"], d["lost"] = self.ok, self.lost
        d["files"] = [f.as_dict() for f in self.files]
        return d


# --- the source, parsed independently -----------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record of the file as Python's csv module cuts it."""

    offset: int
    """Byte offset of its first byte in the decompressed file."""
    line: int
    """Physical line (1-based) it starts on."""
    raw: bytes
    """Its bytes, without the line terminator."""


@dataclass(frozen=True)
class GoodRow:
    offset: int
    line: int
    values: dict[str, Any]
    raw: bytes = b""
    """Its bytes, without the line terminator (what a dead letter of it carries)."""


@dataclass(frozen=True)
class BadRow:
    offset: int
    line: int
    raw: bytes
    reason: str


def open_source(source: str, endpoint_url: str | None = None) -> IO[bytes]:
    """A local path or ``file://`` URL, decompressed by its suffix (.gz, .bz2); any other URL
    (s3://, gs://, azure://, http[s]://) through the worker's sources, as it would read it."""
    if scheme_of(source) not in ("", "file"):
        return CsvSource(source, endpoint_url=endpoint_url).open()
    path = urlparse(source).path if source.startswith("file://") else source
    if path.endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _strip_eol(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def _dialect(fmt: CsvFormat, strict: bool) -> dict[str, Any]:
    return {
        "delimiter": fmt.delimiter,
        "quotechar": fmt.quote_char,
        "escapechar": fmt.escape_char,
        "doublequote": fmt.escape_char is None,
        "quoting": csv.QUOTE_MINIMAL if fmt.quote_char else csv.QUOTE_NONE,
        "strict": strict,
    }


def records(stream: IO[bytes], fmt: CsvFormat) -> Iterator[Record]:
    """Every record of the file (blank lines included), with its offset and line.

    Python's reader is fed one physical line at a time; the lines it pulls for one record are
    that record, so offsets are the sums of the lengths of the lines before it. A record the
    (lenient) reader rejects is still a record: the lines it consumed. A BOM is not part of the
    first record.
    """
    lines: list[bytes] = []
    first = True

    def feed() -> Iterator[str]:
        nonlocal first
        for raw in stream:
            if first:
                first = False
                if fmt.encoding.replace("_", "-").lower() in ("utf-8", "utf8") and raw.startswith(
                    _BOM
                ):
                    raw = raw[len(_BOM) :]
                    state["offset"] = len(_BOM)
            lines.append(raw)
            yield raw.decode("utf-8", errors="surrogateescape")

    state = {"offset": 0, "line": 1}
    reader = csv.reader(feed(), **_dialect(fmt, strict=False))

    def take() -> Record:
        rec = b"".join(lines)
        lines.clear()
        out = Record(state["offset"], state["line"], rec)
        state["offset"] += len(rec)
        state["line"] += rec.count(b"\n")
        return out

    while True:
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error:
            if lines:
                yield take()
            continue
        if lines:
            yield take()
    if lines:
        yield take()


_DECIMAL = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$")
_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_ISO = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
_EPOCH_UNITS = {"epochSeconds": 1_000_000, "epochMillis": 1_000, "epochMicros": 1}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _rule(given: str | Mapping[str, Any]) -> ColumnType:
    """A column's type as given to the verifier: a name, or the spec's object form."""
    from ingest_worker.api.spec import TypedColumn

    return ColumnType.of(given if isinstance(given, str) else TypedColumn.model_validate(given))


def _zone(text: str | None) -> datetime.timezone:
    if text in (None, "", "Z", "UTC"):
        return datetime.UTC
    assert text is not None
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) > 2 else 0)
    return datetime.timezone(sign * datetime.timedelta(minutes=minutes))


def _micros(v: str, rule: ColumnType, avro: bool) -> int:
    """A timestamp's microseconds since the epoch (UTC), or ValueError (also, for Avro, when
    it has non-zero digits finer than microseconds)."""
    if rule.format in _EPOCH_UNITS:
        if not _INT.match(v):
            raise ValueError(f"not a timestamp: {v!r}")
        return int(v) * _EPOCH_UNITS[rule.format]
    if rule.format is not None:
        dt = datetime.datetime.strptime(v, rule.format)
    else:
        m = _ISO.match(v)
        if m is None:
            raise ValueError(f"not a timestamp: {v!r}")
        y, mo, d, h, mi, sec, frac, zone = m.groups()
        if avro and frac and any(c != "0" for c in frac[6:]):
            raise ValueError(f"finer than microseconds: {v!r}")
        dt = datetime.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0),
                               int(sec or 0), int((frac or "0")[:6].ljust(6, "0")),
                               tzinfo=_zone(zone) if zone else None)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_zone(rule.timezone))
    return (dt - _EPOCH) // datetime.timedelta(microseconds=1)


def _convert(value: str, rule: ColumnType, avro: bool) -> Any:
    """A field as the consumer must see it: JSON's value, or Avro's in comparable form
    (decimals as exact text, dates as ISO text, timestamps as microseconds)."""
    if rule.type == "string":
        return None if rule.nullable and value == "" else value
    v = value.strip()
    if v == "":
        if rule.nullable:
            return None
        raise ValueError(f"empty {rule.type}")
    t = rule.type
    if t == "int" and _INT.match(v) and -(2**63) <= int(v) < 2**63:
        return int(v)
    if t == "float" and _FLOAT.match(v):
        return float(v)
    if t == "bool" and v.lower() in _TRUE + _FALSE:
        return v.lower() in _TRUE
    if t == "decimal" and _DECIMAL.match(v):
        d = decimal.Decimal(v)
        q = d.quantize(decimal.Decimal(1).scaleb(-rule.scale))
        digits = len(q.as_tuple().digits) if q else 0
        if q == d and digits <= rule.precision:
            return _decimal_text(q)
    if t == "date":
        if rule.format is None and (m := _DATE.match(v)):
            day = datetime.date(int(m[1]), int(m[2]), int(m[3]))
        elif rule.format is not None:
            day = datetime.datetime.strptime(v, rule.format).date()
        else:
            raise ValueError(f"not a date: {value!r}")
        return day.isoformat() if avro else v
    if t == "timestamp":
        micros = _micros(v, rule, avro)
        return micros if avro else v
    raise ValueError(f"not a {t}: {value!r}")


def _decimal_text(d: decimal.Decimal) -> str:
    return format(abs(d) if d == 0 else d, "f")


def _comparable(value: Any) -> Any:
    """A decoded Avro value in the form :func:`_convert` gives."""
    if isinstance(value, decimal.Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


class _Decoder:
    """Values to dicts: JSON, or Confluent's wire format through the registry (a schema per
    id, fetched once)."""

    def __init__(self, registry_url: str | None) -> None:
        self.registry = None
        self.schemas: dict[int, tuple[dict[str, Any], str]] = {}
        self.parsed: dict[int, Any] = {}
        if registry_url:
            from ingest_worker.schema.registry import Registry

            self.registry = Registry(registry_url)

    def schema(self, schema_id: int) -> tuple[Any, str]:
        """The schema (parsed, for Avro) and its type."""
        if schema_id not in self.schemas:
            assert self.registry is not None
            schema, stype = self.registry.schema(schema_id)
            self.schemas[schema_id] = (schema, stype)
            if stype == "AVRO":
                import fastavro

                self.parsed[schema_id] = fastavro.parse_schema(schema)
        schema, stype = self.schemas[schema_id]
        return self.parsed.get(schema_id, schema), stype

    @property
    def avro(self) -> bool:
        return any(stype == "AVRO" for _, stype in self.schemas.values())

    def __call__(self, raw: bytes) -> Any:
        if self.registry is None:
            return orjson.loads(raw)
        from ingest_worker.schema.registry import parse_frame

        schema_id, body = parse_frame(raw)
        schema, stype = self.schema(schema_id)
        if stype != "AVRO":
            return orjson.loads(body)
        import fastavro

        obj = fastavro.schemaless_reader(io.BytesIO(body), schema)
        return {k: _comparable(v) for k, v in obj.items()}  # type: ignore[union-attr]

    def writer_types(self) -> dict[str, ColumnType]:
        """The column types the writer schemas state (the last id's)."""
        from ingest_worker.schema import avro, jsonschema

        rules: dict[str, ColumnType] = {}
        for schema, stype in self.schemas.values():
            if stype == "AVRO":
                fields, _ = avro.columns_of(schema)
                docs = {f["name"]: f.get("doc", f["name"]) for f in schema["fields"]}
                named = [(docs[n], t) for n, t in fields]
            else:
                named, _ = jsonschema.columns_of(schema)
            rules.update(named)
        return rules


def parse_source(
    stream: IO[bytes], fmt: CsvFormat, source_url: str,
    writer_rules: Mapping[str, ColumnType] | None = None, avro: bool = False,
) -> Iterator[GoodRow | BadRow]:
    """Good and bad rows of the file, in order (header and blank lines are neither).
    ``writer_rules``: the column types the values' schema states (the format's win); ``avro``:
    typed values as Avro carries them."""
    rules = {**(writer_rules or {}), **{c: _rule(t) for c, t in fmt.column_types.items()}}
    # Python's default field limit (128 KiB) is a safety setting, not CSV: a long field is data.
    csv.field_size_limit(2**31 - 1)
    columns: tuple[str, ...] | None = fmt.columns
    need_header = fmt.header
    for rec in records(stream, fmt):
        body = _strip_eol(rec.raw)
        if not body.strip(b"\r\n"):
            continue  # a blank line
        if need_header:
            need_header = False
            names = next(
                csv.reader(io.StringIO(body.decode(fmt.encoding), newline=""),
                           **_dialect(fmt, strict=False))
            )
            if columns is None:
                columns = tuple(n.strip() for n in names)
            continue
        assert columns is not None, "columns are required without a header"
        try:
            text = body.decode(fmt.encoding)
        except UnicodeDecodeError as e:
            yield BadRow(rec.offset, rec.line, body, f"invalid {fmt.encoding}: {e.reason}")
            continue
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), **_dialect(fmt, strict=True)))
        except csv.Error as e:
            yield BadRow(rec.offset, rec.line, body, f"malformed: {e}")
            continue
        if len(rows) != 1 or len(rows[0]) != len(columns):
            n = len(rows[0]) if len(rows) == 1 else f"{len(rows)} records"
            yield BadRow(rec.offset, rec.line, body, f"expected {len(columns)} fields, got {n}")
            continue
        values: dict[str, Any] = dict(zip(columns, rows[0], strict=True))
        try:
            for col, rule in rules.items():
                if col in values:
                    values[col] = _convert(values[col], rule, avro)
        except ValueError as e:
            yield BadRow(rec.offset, rec.line, body, str(e))
            continue
        if fmt.include_metadata:
            values["_source"] = source_url
            values["_line"] = rec.line
        yield GoodRow(rec.offset, rec.line, values, body)


# --- matching ---------------------------------------------------------------------------------


def id_prefix_for(source_url: str, source_version: str | None) -> str:
    """The per-file half of the event id, as documented: blake2b-64 of ``url NUL version``."""
    ident = f"{source_url}\0{source_version or ''}".encode()
    return hashlib.blake2b(ident, digest_size=8).hexdigest()


def local_version(path: str) -> str:
    """The version the worker records for a local file (size and mtime)."""
    st = Path(urlparse(path).path if path.startswith("file://") else path).stat()
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"


def _digest(values: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in values.items() if k != "_id"}
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _split_id(event_id: Any) -> tuple[str, int] | None:
    if not isinstance(event_id, str) or "-" not in event_id:
        return None
    prefix, _, off = event_id.rpartition("-")
    return (prefix, int(off)) if off.isdigit() else None


@dataclass
class _Seen:
    count: int
    digest: bytes
    differs: bool = False


@dataclass(frozen=True)
class SourceFile:
    """One file of the ingestion, named as the worker named it."""

    url: str
    """Its URL as the ingestion saw it: the messages' ``_source``, the dead letters' ``source``
    header and, with ``version``, the event-id prefix."""
    version: str | None = None
    """Its version as the worker read it (local: size and mtime; S3: version id or ETag; ...);
    ``""`` for a source without one. None: unknown (see ``id_prefix``)."""
    id_prefix: str | None = None
    """The event-id prefix, to override :func:`id_prefix_for` ``(url, version)``. With neither
    it nor a version, the prefix most of the messages no other file claims carry (one such file
    at most)."""
    read: str | IO[bytes] | None = None
    """Where the verifier reads it: a path or URL (default: ``url``; .gz/.bz2 by suffix), or an
    open, decompressed stream (left open)."""


@dataclass
class _Messages:
    """The topic, indexed: a digest per (event-id prefix, offset), not the messages."""

    by_prefix: dict[str, dict[int, _Seen]] = field(default_factory=dict)
    count: int = 0
    unreadable: int = 0
    unreadable_examples: list[str] = field(default_factory=list)


def _index_messages(messages: Iterable[Message], decode: _Decoder) -> _Messages:
    index = _Messages()
    for m in messages:
        index.count += 1
        raw = m.value()
        try:
            obj = decode(raw) if raw is not None else None
        except (ValueError, EOFError, StopIteration):
            obj = None
        ident = _split_id(obj.get("_id")) if isinstance(obj, dict) else None
        if ident is None or not isinstance(obj, dict):
            index.unreadable += 1
            _example(index.unreadable_examples, f"unreadable message {(raw or b'')[:80]!r}")
            continue
        prefix, off = ident
        seen = index.by_prefix.setdefault(prefix, {})
        d = _digest(obj)
        s = seen.get(off)
        if s is None:
            seen[off] = _Seen(1, d)
        else:
            s.count += 1
            s.differs |= s.digest != d
    return index


def _known_prefixes(files: Sequence[SourceFile]) -> list[str | None]:
    """Each file's event-id prefix, None where it can only be inferred (one file at most)."""
    if len({f.url for f in files}) != len(files):
        raise ValueError("a file is given twice")
    known = [
        f.id_prefix or (None if f.version is None else id_prefix_for(f.url, f.version))
        for f in files
    ]
    if known.count(None) > 1:
        raise ValueError(f"{known.count(None)} files have neither a version nor an id prefix")
    return known


def _infer_prefix(known: list[str | None], index: _Messages) -> None:
    """The file of unknown version takes the prefix most of the other files' messages carry."""
    rest = [p for p in index.by_prefix if p not in known]
    if None in known and rest:
        known[known.index(None)] = max(rest, key=lambda p: len(index.by_prefix[p]))


def _example(into: list[str], text: str) -> None:
    if len(into) < _EXAMPLES:
        into.append(text)


@dataclass(frozen=True)
class _DeadLetter:
    value: bytes
    refused: bool
    """Kafka refused the row (a good row as CSV)."""
    truncated: bool


@dataclass
class _DeadLetters:
    """The dead-letter topic, by the file each names (its ``source`` header), then offset."""

    by_source: dict[str, dict[int, list[_DeadLetter]]] = field(default_factory=dict)
    count: int = 0
    no_offset: int = 0


def _index_dead_letters(dead_letters: Iterable[Message], only: str | None) -> _DeadLetters:
    """``only``: the one file's URL, which then takes every dead letter whatever its header
    says (the single-file check never needed the header, and older tools may not match it)."""
    index = _DeadLetters()
    for m in dead_letters:
        index.count += 1
        hdr = _header(m, deadletter.OFFSET)
        if hdr is None or not hdr.isdigit():
            index.no_offset += 1
            continue
        source = only if only is not None else (_header(m, deadletter.SOURCE) or b"").decode(
            errors="replace")
        index.by_source.setdefault(source, {}).setdefault(int(hdr), []).append(_DeadLetter(
            m.value() or b"", _header(m, deadletter.KAFKA_ERROR) is not None,
            _header(m, deadletter.TRUNCATED) == b"true"))
    return index


def _check_dead_letters(
    report: VerifyReport, got: list[_DeadLetter], row: GoodRow | BadRow
) -> None:
    """The dead letters of one row carry its bytes (a prefix of them, when cut to fit)."""
    report.dlq_duplicates += len(got) - 1
    if any(d.value != row.raw and not (d.truncated and row.raw.startswith(d.value))
           for d in got):
        report.dlq_mismatched += 1
        _example(report.dlq_examples, f"line {row.line}: dead letter differs from the row")


def _header(msg: Message, name: str) -> bytes | None:
    for k, v in msg.headers() or []:
        if k == name:
            return v
    return None


def _check_file(
    file: SourceFile,
    id_prefix: str | None,
    fmt: CsvFormat,
    seen: dict[int, _Seen],
    dlq: dict[int, list[_DeadLetter]] | None,
    endpoint_url: str | None,
    decode: _Decoder,
) -> VerifyReport:
    """One file's report: its rows against the messages of its prefix and its dead letters."""
    report = VerifyReport(source=file.url, id_prefix=id_prefix)
    report.messages = sum(s.count for s in seen.values())
    if dlq is not None:
        report.dlq_messages = sum(len(v) for v in dlq.values())
    read = file.url if file.read is None else file.read
    stream: IO[bytes] | None = None
    try:
        # Opened in here: with many files, one gone since the listing is that file's failure.
        stream = open_source(read, endpoint_url) if isinstance(read, str) else read
        for row in parse_source(stream, fmt, file.url, decode.writer_types(), decode.avro):
            if isinstance(row, BadRow):
                report.bad_expected += 1
                _example(report.bad_examples, f"line {row.line}: {row.reason}")
                published = seen.pop(row.offset, None)
                if published is not None:
                    report.rows_unexpected += published.count
                    _example(report.unexpected_examples,
                             f"bad row at line {row.line} published ({row.reason})")
                if dlq is not None:
                    got = dlq.pop(row.offset, None)
                    if not got:
                        report.dlq_missing += 1
                        _example(report.dlq_examples, f"line {row.line}: no dead letter")
                    else:
                        _check_dead_letters(report, got, row)
                continue
            report.rows_expected += 1
            s = seen.pop(row.offset, None)
            refused = dlq.pop(row.offset, None) if dlq is not None and s is None else None
            if refused and all(d.refused for d in refused):
                report.rows_refused += 1
                _check_dead_letters(report, refused, row)
                continue
            if refused and dlq is not None:
                dlq[row.offset] = refused  # not a refusal: left to count as unexpected
            if s is None:
                report.rows_missing += 1
                _example(report.missing_examples, f"line {row.line} (offset {row.offset})")
                continue
            report.duplicates += s.count - 1
            if s.differs or s.digest != _digest(row.values):
                report.rows_mismatched += 1
                _example(report.mismatched_examples, f"line {row.line} (offset {row.offset})")
            else:
                report.rows_present += 1
    except (OSError, EOFError, UnicodeDecodeError, SourceError) as e:
        report.source_error = f"{type(e).__name__}: {e}"
    finally:
        if isinstance(read, str) and stream is not None:
            stream.close()
    for off, s in seen.items():
        report.rows_unexpected += s.count
        _example(report.unexpected_examples, f"id for offset {off}: no such good row")
    if dlq is not None:
        for off, vals in dlq.items():
            report.dlq_unexpected += len(vals)
            _example(report.unexpected_examples, f"dead letter for offset {off}: no bad row")
    return report


# The counts a total sums over its files.
_SUMMED = ("rows_expected", "rows_present", "rows_missing", "rows_mismatched", "rows_unexpected",
           "duplicates", "bad_expected", "rows_refused", "dlq_missing", "dlq_unexpected",
           "dlq_mismatched", "dlq_duplicates")
_EXAMPLE_LISTS = ("missing_examples", "unexpected_examples", "mismatched_examples",
                  "bad_examples", "dlq_examples")


def _total(
    files: list[VerifyReport],
    index: _Messages,
    dead: _DeadLetters | None,
    reported_bad: int | None,
) -> VerifyReport:
    """The sums of the files' reports, plus what belongs to no file (left in the indexes)."""
    total = VerifyReport(bad_reported=reported_bad, messages=index.count, files=files)
    total.foreign_messages = index.unreadable
    total.foreign_examples = list(index.unreadable_examples)
    for prefix, seen in index.by_prefix.items():
        total.foreign_messages += sum(s.count for s in seen.values())
        _example(total.foreign_examples, f"{len(seen)} ids with foreign prefix {prefix}")
    if dead is not None:
        total.dlq_messages = dead.count
        total.dlq_foreign = dead.no_offset
        if dead.no_offset:
            _example(total.foreign_examples, f"{dead.no_offset} dead letters without an offset")
        for source, by_offset in dead.by_source.items():
            total.dlq_foreign += sum(len(v) for v in by_offset.values())
            _example(total.foreign_examples,
                     f"{len(by_offset)} dead-lettered rows of source {source!r}, no file here")
    total.rows_unexpected, total.dlq_unexpected = total.foreign_messages, total.dlq_foreign
    # Foreign first: a file's examples are cut at ten, and one foreign line may explain them all.
    total.unexpected_examples = list(total.foreign_examples)
    many = len(files) > 1
    for f in files:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(f, name))
        for name in _EXAMPLE_LISTS:
            for ex in getattr(f, name):
                _example(getattr(total, name), f"{f.source}: {ex}" if many else ex)
    unreadable = [f for f in files if f.source_error]
    if len(files) == 1:
        total.id_prefix, total.source_error = files[0].id_prefix, files[0].source_error
    elif unreadable:
        total.source_error = f"{len(unreadable)} of {len(files)} files could not be read to " \
            f"the end (first: {unreadable[0].source}: {unreadable[0].source_error})"
    return total


def verify_files(
    files: Sequence[SourceFile],
    messages: Iterable[Message],
    fmt: CsvFormat | None = None,
    *,
    dead_letters: Iterable[Message] | None = None,
    reported_bad: int | None = None,
    endpoint_url: str | None = None,
) -> VerifyReport:
    """Checks messages (read once, in any order) against every file of an ingestion.

    ``dead_letters``: the dead-letter topic's messages; ``reported_bad``: the worker's count of
    bad rows for the whole ingestion; ``endpoint_url``: the object store's, for remote files.
    The report's ``files`` holds one report per file; its counts are their sums plus what is
    foreign (messages and dead letters of no file).
    """
    prefixes = _known_prefixes(files)  # before the topic is read: a mistake fails at once
    fmt = fmt or CsvFormat()
    decode = _Decoder(fmt.schema_registry)
    index = _index_messages(messages, decode)
    _infer_prefix(prefixes, index)
    dead = None
    if dead_letters is not None:
        dead = _index_dead_letters(dead_letters, files[0].url if len(files) == 1 else None)
    reports = []
    for f, prefix in zip(files, prefixes, strict=True):
        seen = index.by_prefix.pop(prefix, {}) if prefix is not None else {}
        dlq = None if dead is None else dead.by_source.pop(f.url, {})
        reports.append(_check_file(f, prefix, fmt, seen, dlq, endpoint_url, decode))
    return _total(reports, index, dead, reported_bad)


def _single_file(
    source: str | IO[bytes], source_url: str | None, id_prefix: str | None
) -> SourceFile:
    """The one file of the single-file API: a local path's version is read from the disk."""
    if source_url is None:
        source_url = source if isinstance(source, str) else ""
    version = None
    if id_prefix is None and isinstance(source, str):
        try:
            version = local_version(source)
        except OSError:
            version = None  # not a local file: the prefix most messages carry
    return SourceFile(source_url, version, id_prefix, read=source)


def verify_messages(
    source: str | IO[bytes],
    messages: Iterable[Message],
    fmt: CsvFormat | None = None,
    *,
    source_url: str | None = None,
    id_prefix: str | None = None,
    dead_letters: Iterable[Message] | None = None,
    reported_bad: int | None = None,
) -> VerifyReport:
    """Checks messages (already read) against the source file.

    ``source`` is a path, ``file://`` URL or an open binary stream (decompressed);
    ``source_url`` is the URL the ingestion was given (``_source``; defaults to ``source``);
    ``id_prefix`` the event-id prefix (default: :func:`id_prefix_for` a local file's version,
    else the prefix most messages carry); ``dead_letters`` the dead-letter topic's messages;
    ``reported_bad`` the worker's count of bad rows.
    """
    return verify_files([_single_file(source, source_url, id_prefix)], messages, fmt,
                        dead_letters=dead_letters, reported_bad=reported_bad)


# --- Kafka ------------------------------------------------------------------------------------


def _high_watermarks(
    consumer: Any, topic: str, partitions: list[int], deadline: float
) -> dict[int, int]:
    """High watermarks of ``partitions``, retried while the broker is still electing leaders
    (right after a restart it answers NOT_LEADER_FOR_PARTITION for a few seconds)."""
    from confluent_kafka import KafkaException, TopicPartition

    while True:
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def consume(bootstrap: str, topic: str, timeout: float = 60.0, min_messages: int = 0,
            committed: bool = True) -> list[Any]:
    """Every message of ``topic`` up to its end (duplicates included).

    Waits up to ``timeout`` for the topic to hold ``min_messages``, then reads to the end.
    ``committed``: read as a ``read_committed`` consumer (to the last stable offset, aborted
    transactions skipped), which is what an exactly-once ingestion's consumers must do; on a
    topic without transactions it reads the same. False reads everything written, aborted
    rows included.
    """
    return list(read_topic(bootstrap, topic, timeout, min_messages, committed))


def read_topic(
    bootstrap: str, topic: str, timeout: float = 60.0, min_messages: int = 0,
    committed: bool = True,
) -> Iterator[Any]:
    """:func:`consume`, one message at a time: a whole ingestion's topic need not fit in memory.

    Gives up when no message came for ``timeout`` (30 s at least) before the end. The end of a
    partition is its high watermark, or the consumer's end-of-partition event: transaction
    markers and aborted rows take offsets that no message is delivered at.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"csv-verify-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise RuntimeError(f"topic {topic} not found: {md.error if md else 'absent'}")
        partitions = sorted(md.partitions)
        deadline = time.monotonic() + timeout
        while True:
            highs = _high_watermarks(consumer, topic, partitions, deadline)
            if sum(highs.values()) >= min_messages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        remaining = {p: h for p, h in highs.items() if h > 0}
        stall = max(timeout, 30.0)
        read_deadline = time.monotonic() + stall
        while remaining and time.monotonic() < read_deadline:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            if batch:
                # Progress, not the whole read, is timed: the caller's work per message counts.
                read_deadline = time.monotonic() + stall
            for msg in batch:
                err = msg.error()
                if err is not None:
                    eof = msg.partition()
                    if err.code() == KafkaError._PARTITION_EOF and eof is not None:
                        remaining.pop(eof, None)
                    continue
                p, off = msg.partition(), msg.offset()
                if off is not None and p in remaining and off < remaining[p]:
                    yield msg
                    if off + 1 >= remaining[p]:
                        del remaining[p]
        if remaining:
            raise TimeoutError(f"could not read {topic} to its end: {remaining}")
    finally:
        consumer.close()


def verify(
    source: str,
    topic: str,
    bootstrap: str,
    fmt: CsvFormat | None = None,
    *,
    dead_letter_topic: str | None = None,
    source_url: str | None = None,
    id_prefix: str | None = None,
    reported_bad: int | None = None,
    timeout: float = 60.0,
    committed: bool = True,
) -> VerifyReport:
    """Reads ``topic`` (and ``dead_letter_topic``) to the end and checks it against ``source``."""
    return verify_many([_single_file(source, source_url, id_prefix)], topic, bootstrap, fmt,
                       dead_letter_topic=dead_letter_topic, reported_bad=reported_bad,
                       timeout=timeout, committed=committed)


def verify_many(
    files: Sequence[SourceFile],
    topic: str,
    bootstrap: str,
    fmt: CsvFormat | None = None,
    *,
    dead_letter_topic: str | None = None,
    reported_bad: int | None = None,
    timeout: float = 60.0,
    endpoint_url: str | None = None,
    committed: bool = True,
) -> VerifyReport:
    """Reads ``topic`` (and ``dead_letter_topic``) once, to the end, and checks it against every
    file of the ingestion (see :func:`verify_files`). ``committed``: as a ``read_committed``
    consumer (see :func:`consume`)."""
    dead = (read_topic(bootstrap, dead_letter_topic, timeout, committed=committed)
            if dead_letter_topic else None)
    return verify_files(files, read_topic(bootstrap, topic, timeout, committed=committed), fmt,
                        dead_letters=dead, reported_bad=reported_bad, endpoint_url=endpoint_url)


# --- the files of an ingestion ----------------------------------------------------------------


def ingestion_files(
    source: str, endpoint_url: str | None = None, source_url: str | None = None
) -> list[SourceFile]:
    """The files ``source`` (one file, a prefix or a glob) selects, with the versions the
    worker's planner lists, named as the ingestion of ``source_url`` (a prefix or glob of the
    same files elsewhere, e.g. the path a pod mounts them at) named them."""
    base = listing_prefix(source)
    ingested = listing_prefix(source_url or source)
    return [SourceFile(ingested + e.url[len(base):], e.version, read=e.url)
            for e in list_files(source, endpoint_url)]


# --- the command --------------------------------------------------------------------------------


def _char(value: str) -> str:
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one character, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csv-verify",
        description="Check that a topic holds every good row of an ingestion's CSV files (and "
                    "nothing else).",
    )
    p.add_argument("source", help="the CSV file (path or URL; .gz/.bz2 decompressed), or the "
                   "ingestion's many: a prefix ending in / or a glob (* ? [...])")
    p.add_argument("--topic", required=True)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--dead-letter-topic")
    p.add_argument("--source-url", help="the URL the ingestion was given (default: SOURCE); "
                   "with many files, its listing prefix replaces SOURCE's in each file's URL")
    p.add_argument("--id-prefix", help="event-id prefix (default: from the file, or inferred); "
                   "one file only")
    p.add_argument("--endpoint-url", help="the object store's endpoint (S3-compatible, ...)")
    p.add_argument("--delimiter", type=_char, default=",")
    p.add_argument("--quote-char", type=_char, default='"')
    p.add_argument("--escape-char", type=_char)
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--columns", help="comma-separated column names")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--type", action="append", dest="types", default=[], metavar="COL=TYPE",
                   help="a column's type: a name, or the spec's object form as JSON")
    p.add_argument("--schema-registry", metavar="URL",
                   help="values are Avro or JSON Schema in Confluent's wire format: decode them "
                   "with the registry's schemas")
    p.add_argument("--metadata", action="store_true",
                   help="messages carry _source and _line (the ingestion's includeMetadata)")
    p.add_argument("--no-metadata", action="store_true", help=argparse.SUPPRESS)  # the default
    p.add_argument("--reported-bad", type=int, help="the worker's rowsFailed, to compare")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--read-uncommitted", action="store_true",
                   help="read aborted transactions' rows too (default: read_committed, as an "
                   "exactly-once ingestion's consumers must)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when nothing is lost or foreign, 1 otherwise, 2 on a usage or read error."""
    args = build_parser().parse_args(argv)
    types: dict[str, str | Mapping[str, Any]] = {}
    names = ("string", "int", "float", "bool", "decimal", "date", "timestamp")
    for kv in args.types:
        col, sep, ctype = kv.partition("=")
        given: str | Mapping[str, Any] = ctype
        if ctype.startswith("{"):
            try:
                given = json.loads(ctype)
            except ValueError:
                given = ""
        name = given.get("type") if isinstance(given, Mapping) else given
        if not sep or name not in names:
            print(f"csv-verify: bad --type {kv!r}", file=sys.stderr)
            return 2
        types[col.strip()] = given
    fmt = CsvFormat(
        delimiter=args.delimiter,
        quote_char=args.quote_char,
        escape_char=args.escape_char,
        header=not args.no_header,
        columns=tuple(c.strip() for c in args.columns.split(",")) if args.columns else None,
        encoding=args.encoding,
        column_types=types,
        include_metadata=args.metadata and not args.no_metadata,
        schema_registry=args.schema_registry,
    )
    if fmt.columns is None and not fmt.header:
        print("csv-verify: --columns is required with --no-header", file=sys.stderr)
        return 2
    if not names_many(args.source) and os.path.isdir(local_files.local_path(args.source)):
        print(f"csv-verify: {args.source} is a folder: end it with / to verify every file "
              "under it", file=sys.stderr)
        return 2
    try:
        files = ingestion_files(args.source, args.endpoint_url, args.source_url)
        if args.id_prefix is not None:
            if len(files) > 1:
                print(f"csv-verify: --id-prefix is for one file, {args.source} has "
                      f"{len(files)}", file=sys.stderr)
                return 2
            files = [replace(files[0], id_prefix=args.id_prefix)]
        report = verify_many(
            files,
            args.topic,
            args.bootstrap_servers,
            fmt,
            dead_letter_topic=args.dead_letter_topic,
            reported_bad=args.reported_bad,
            timeout=args.timeout,
            endpoint_url=args.endpoint_url,
            committed=not args.read_uncommitted,
        )
    except (OSError, RuntimeError, SourceError) as e:
        print(f"csv-verify: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=1) if args.json else report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
