"""``csv-verify``: proves an ingestion lost nothing, by reading the topic back against the file.

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

The rules of what a row is mirror the documented behaviour: a UTF-8 BOM is skipped, the first
non-blank record is the header (names trimmed), blank lines are not rows, a row must decode in
the file's encoding, parse as exactly one record with as many fields as there are columns, and
its typed columns must convert.

Usage as a library: :func:`verify` (reads Kafka) or :func:`verify_messages` (messages you read
yourself) return a :class:`VerifyReport`.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import io
import json
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlparse

import orjson

from ingest_worker.kafka import deadletter

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
    column_types: Mapping[str, str] = field(default_factory=dict)
    """Column -> int, float, bool, timestamp (string is the default)."""
    include_metadata: bool = False
    """Messages carry _source and _line (the ingestion's includeMetadata)."""


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
    source_error: str | None = None
    """The source could not be read to its end (e.g. a truncated gzip)."""

    @property
    def lost(self) -> int:
        return self.rows_missing + self.rows_mismatched

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
        lines = [", ".join(parts)]
        if self.source_error:
            lines.append(f"source error: {self.source_error}")
        for title, ex in (
            ("missing", self.missing_examples),
            ("mismatched", self.mismatched_examples),
            ("unexpected", self.unexpected_examples),
        ):
            if ex:
                lines.append(f"{title} (first {len(ex)}): " + "; ".join(ex))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"], d["lost"] = self.ok, self.lost
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


def open_source(source: str) -> IO[bytes]:
    """A local path or ``file://`` URL, decompressed by its suffix (.gz, .bz2)."""
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


def _convert(value: str, ctype: str) -> Any:
    if ctype == "string":
        return value
    v = value.strip()
    if v == "":
        return None
    if ctype == "int" and _INT.match(v) and -(2**63) <= int(v) < 2**63:
        return int(v)
    if ctype == "float" and _FLOAT.match(v):
        return float(v)
    if ctype == "bool" and v.lower() in _TRUE + _FALSE:
        return v.lower() in _TRUE
    if ctype == "timestamp" and _TIMESTAMP.match(v):
        return v
    raise ValueError(f"not a {ctype}: {value!r}")


def parse_source(
    stream: IO[bytes], fmt: CsvFormat, source_url: str
) -> Iterator[GoodRow | BadRow]:
    """Good and bad rows of the file, in order (header and blank lines are neither)."""
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
            for col, ctype in fmt.column_types.items():
                values[col] = _convert(values[col], ctype)
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


def _index_messages(
    messages: Iterable[Message], report: VerifyReport, id_prefix: str | None
) -> tuple[dict[int, _Seen], str | None]:
    by_prefix: dict[str, dict[int, _Seen]] = {}
    for m in messages:
        report.messages += 1
        raw = m.value()
        try:
            obj = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            obj = None
        ident = _split_id(obj.get("_id")) if isinstance(obj, dict) else None
        if ident is None or not isinstance(obj, dict):
            report.rows_unexpected += 1
            _example(report.unexpected_examples, f"unreadable message {(raw or b'')[:80]!r}")
            continue
        prefix, off = ident
        seen = by_prefix.setdefault(prefix, {})
        d = _digest(obj)
        s = seen.get(off)
        if s is None:
            seen[off] = _Seen(1, d)
        else:
            s.count += 1
            s.differs |= s.digest != d
    if id_prefix is None and by_prefix:
        id_prefix = max(by_prefix, key=lambda p: len(by_prefix[p]))  # the file's, by majority
    for prefix, seen in by_prefix.items():
        if prefix != id_prefix:
            report.rows_unexpected += sum(s.count for s in seen.values())
            _example(report.unexpected_examples, f"{len(seen)} ids with foreign prefix {prefix}")
    return by_prefix.get(id_prefix or "", {}), id_prefix


def _example(into: list[str], text: str) -> None:
    if len(into) < _EXAMPLES:
        into.append(text)


@dataclass(frozen=True)
class _DeadLetter:
    value: bytes
    refused: bool
    """Kafka refused the row (a good row as CSV)."""
    truncated: bool


def _check_dead_letters(report: VerifyReport, got: list[_DeadLetter], raw: bytes) -> None:
    """The dead letters of one row carry its bytes (a prefix of them, when cut to fit)."""
    report.dlq_duplicates += len(got) - 1
    if any(d.value != raw and not (d.truncated and raw.startswith(d.value)) for d in got):
        report.dlq_mismatched += 1


def _header(msg: Message, name: str) -> bytes | None:
    for k, v in msg.headers() or []:
        if k == name:
            return v
    return None


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
    fmt = fmt or CsvFormat()
    report = VerifyReport(bad_reported=reported_bad)
    if source_url is None:
        source_url = source if isinstance(source, str) else ""
    if id_prefix is None and isinstance(source, str):
        try:
            id_prefix = id_prefix_for(source_url, local_version(source))
        except OSError:
            id_prefix = None
    seen, report.id_prefix = _index_messages(messages, report, id_prefix)
    dlq: dict[int, list[_DeadLetter]] | None = None
    if dead_letters is not None:
        dlq = {}
        n_dead = 0
        for m in dead_letters:
            n_dead += 1
            hdr = _header(m, deadletter.OFFSET)
            if hdr is None or not hdr.isdigit():
                report.dlq_unexpected += 1
                continue
            dlq.setdefault(int(hdr), []).append(_DeadLetter(
                m.value() or b"", _header(m, deadletter.KAFKA_ERROR) is not None,
                _header(m, deadletter.TRUNCATED) == b"true"))
        report.dlq_messages = n_dead
    stream = open_source(source) if isinstance(source, str) else source
    try:
        for row in parse_source(stream, fmt, source_url):
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
                    else:
                        _check_dead_letters(report, got, row.raw)
                continue
            report.rows_expected += 1
            s = seen.pop(row.offset, None)
            refused = dlq.pop(row.offset, None) if dlq is not None and s is None else None
            if refused and all(d.refused for d in refused):
                report.rows_refused += 1
                _check_dead_letters(report, refused, row.raw)
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
    except (OSError, EOFError, UnicodeDecodeError) as e:
        report.source_error = f"{type(e).__name__}: {e}"
    finally:
        if isinstance(source, str):
            stream.close()
    for off, s in seen.items():
        report.rows_unexpected += s.count
        _example(report.unexpected_examples, f"id for offset {off}: no such good row")
    if dlq is not None:
        for off, vals in dlq.items():
            report.dlq_unexpected += len(vals)
            _example(report.unexpected_examples, f"dead letter for offset {off}: no bad row")
    return report


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


def consume(bootstrap: str, topic: str, timeout: float = 60.0, min_messages: int = 0) -> list[Any]:
    """Every message of ``topic`` up to its high watermarks (duplicates included).

    Waits up to ``timeout`` for the topic to hold ``min_messages``, then reads to the end.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"csv-verify-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
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
        out: list[Any] = []
        read_deadline = time.monotonic() + max(timeout, 30.0)
        while remaining and time.monotonic() < read_deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                if msg.error() is not None:
                    continue
                p, off = msg.partition(), msg.offset()
                if off is not None and p in remaining and off < remaining[p]:
                    out.append(msg)
                    if off + 1 >= remaining[p]:
                        del remaining[p]
        if remaining:
            raise TimeoutError(f"could not read {topic} to its end: {remaining}")
        return out
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
) -> VerifyReport:
    """Reads ``topic`` (and ``dead_letter_topic``) to the end and checks it against ``source``."""
    messages = consume(bootstrap, topic, timeout)
    dead = consume(bootstrap, dead_letter_topic, timeout) if dead_letter_topic else None
    return verify_messages(
        source,
        messages,
        fmt,
        source_url=source_url,
        id_prefix=id_prefix,
        dead_letters=dead,
        reported_bad=reported_bad,
    )


# --- the command --------------------------------------------------------------------------------


def _char(value: str) -> str:
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one character, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csv-verify",
        description="Check that a topic holds every good row of a CSV file (and nothing else).",
    )
    p.add_argument("source", help="the CSV file (path or file:// URL; .gz/.bz2 decompressed)")
    p.add_argument("--topic", required=True)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--dead-letter-topic")
    p.add_argument("--source-url", help="the URL the ingestion was given (default: SOURCE)")
    p.add_argument("--id-prefix", help="event-id prefix (default: from the file, or inferred)")
    p.add_argument("--delimiter", type=_char, default=",")
    p.add_argument("--quote-char", type=_char, default='"')
    p.add_argument("--escape-char", type=_char)
    p.add_argument("--no-header", action="store_true")
    p.add_argument("--columns", help="comma-separated column names")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--type", action="append", dest="types", default=[], metavar="COL=TYPE")
    p.add_argument("--metadata", action="store_true",
                   help="messages carry _source and _line (the ingestion's includeMetadata)")
    p.add_argument("--no-metadata", action="store_true", help=argparse.SUPPRESS)  # the default
    p.add_argument("--reported-bad", type=int, help="the worker's rowsFailed, to compare")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when nothing is lost or foreign, 1 otherwise, 2 on a usage or read error."""
    args = build_parser().parse_args(argv)
    types: dict[str, str] = {}
    for kv in args.types:
        col, sep, ctype = kv.partition("=")
        if not sep or ctype not in ("string", "int", "float", "bool", "timestamp"):
            print(f"csv-verify: bad --type {kv!r}", file=sys.stderr)
            return 2
        types[col.strip()] = ctype
    fmt = CsvFormat(
        delimiter=args.delimiter,
        quote_char=args.quote_char,
        escape_char=args.escape_char,
        header=not args.no_header,
        columns=tuple(c.strip() for c in args.columns.split(",")) if args.columns else None,
        encoding=args.encoding,
        column_types=types,
        include_metadata=args.metadata and not args.no_metadata,
    )
    if fmt.columns is None and not fmt.header:
        print("csv-verify: --columns is required with --no-header", file=sys.stderr)
        return 2
    try:
        report = verify(
            args.source,
            args.topic,
            args.bootstrap_servers,
            fmt,
            dead_letter_topic=args.dead_letter_topic,
            source_url=args.source_url,
            id_prefix=args.id_prefix,
            reported_bad=args.reported_bad,
            timeout=args.timeout,
        )
    except (OSError, RuntimeError) as e:
        print(f"csv-verify: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=1) if args.json else report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
