"""The schema an ingestion writes with: settled once, recorded in status, reused ever after.

The first run to reach a file settles it: the declared column types, the rest inferred from a
sample of the file when ``format.inferTypes`` asks (else strings); with a Schema Registry, the
schema is registered (``autoRegister``: the subject's compatibility decides) or the subject's
latest version is taken and the file checked against it. The result, with the subject, version
and id, is recorded in ``status.schema`` (:class:`SchemaLedger`); every later unit, file, shard
and resume of the same restart generation reads it back and never infers again, so a row that
does not fit is a bad row, and the schema never changes mid-ingestion.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ingest_worker.api.spec import (
    CsvIngestionSpec,
    KeyFormat,
    SubjectNameStrategy,
    ValueFormat,
)
from ingest_worker.csv.dialect import ConfigError, Header, Layout
from ingest_worker.schema import avro, jsonschema
from ingest_worker.schema.columns import STRING, ColumnType
from ingest_worker.schema.infer import infer, sample_rows
from ingest_worker.schema.registry import Auth, Registered, Registry, frame

if TYPE_CHECKING:
    from ingest_worker.sources import CsvSource

log = logging.getLogger(__name__)

SCHEMA_TYPES = {ValueFormat.AVRO: "AVRO", ValueFormat.JSON_SCHEMA: "JSON"}
SECRET_DIR_ENV = "CSVKAFKA_REGISTRY_SECRET_DIR"
"""Where the registry's Secret is mounted (the pod), or given (--schema-registry-secret-dir)."""
SAMPLE_BLOCK = 1 << 20
SAMPLE_MAX_BYTES = 64 << 20


class SchemaLedger(Protocol):
    """Where the settled schema is recorded (the CsvIngestion's status)."""

    def schema(self) -> dict[str, Any] | None:
        """The recorded schema (the wire form of :class:`Settled`), if any."""
        ...

    def record_schema(self, record: dict[str, Any]) -> dict[str, Any]:
        """Records ``record`` unless one of the same restart generation is there already;
        returns the one that stays (the first writer wins)."""
        ...


class MemoryLedger:
    def __init__(self) -> None:
        self.recorded: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any] | None:
        return self.recorded

    def record_schema(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.recorded is None or self.recorded.get("restart") != record.get("restart"):
            self.recorded = record
        return self.recorded


class CachingLedger:
    """A ledger read once: a pod of many units asks status for the schema only until it has
    it."""

    def __init__(self, inner: SchemaLedger) -> None:
        self.inner = inner
        self.known: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any] | None:
        if self.known is None:
            self.known = self.inner.schema()
        return self.known

    def record_schema(self, record: dict[str, Any]) -> dict[str, Any]:
        self.known = self.inner.record_schema(record)
        return self.known


def needs_registry(spec: CsvIngestionSpec) -> bool:
    """Whether values or keys are written with a registered schema."""
    return (spec.kafka.value_format is not ValueFormat.JSON
            or spec.kafka.key_format is KeyFormat.AVRO)


@dataclass(frozen=True)
class Subject:
    subject: str
    version: int
    id: int

    @classmethod
    def of(cls, reg: Registered) -> Subject:
        return cls(reg.subject, reg.version, reg.id)


@dataclass(frozen=True)
class Settled:
    """How rows are written: each column's type, in the value's order, and the schemas."""

    value_format: str
    columns: tuple[tuple[str, ColumnType], ...]
    """(CSV column, type) in the order the value writes them (the schema's field order)."""
    value: Subject | None = None
    key: Subject | None = None
    restart: int = 0

    @property
    def frame(self) -> bytes:
        return b"" if self.value is None else frame(self.value.id)

    @property
    def key_frame(self) -> bytes | None:
        return None if self.key is None else frame(self.key.id)

    def apply(self, layout: Layout) -> Layout:
        """The layout writing with this schema."""
        return replace(
            layout,
            column_types=dict(self.columns),
            order=tuple(layout.columns.index(c) for c, _ in self.columns),
            value_format=self.value_format,
            frame=self.frame,
            key_frame=self.key_frame,
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "valueFormat": self.value_format,
            "columns": [{"name": c, **t.to_wire()} for c, t in self.columns],
            "restart": self.restart,
        }
        if self.value is not None:
            out |= {"subject": self.value.subject, "version": self.value.version,
                    "id": self.value.id}
        if self.key is not None:
            out |= {"keySubject": self.key.subject, "keyVersion": self.key.version,
                    "keyId": self.key.id}
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Settled:
        columns = tuple(
            (c["name"], ColumnType(**{k: v for k, v in c.items() if k != "name"}))
            for c in d["columns"])
        value = Subject(d["subject"], int(d["version"]), int(d["id"])) if "subject" in d else None
        key = (Subject(d["keySubject"], int(d["keyVersion"]), int(d["keyId"]))
               if "keySubject" in d else None)
        return cls(d["valueFormat"], columns, value, key, int(d.get("restart", 0)))


def record_name(spec: CsvIngestionSpec) -> str:
    reg = spec.kafka.schema_registry
    if reg is not None and reg.record_name:
        return reg.record_name
    short = re.sub(r"[^A-Za-z0-9_]", "_", spec.kafka.topic)
    return f"csvkafka.{'_' + short if short[0].isdigit() else short}"


def value_subject(spec: CsvIngestionSpec, name: str) -> str:
    strategy = spec.kafka.schema_registry.subject_name_strategy  # type: ignore[union-attr]
    topic = spec.kafka.topic
    if strategy is SubjectNameStrategy.RECORD:
        return name
    if strategy is SubjectNameStrategy.TOPIC_RECORD:
        return f"{topic}-{name}"
    return f"{topic}-value"


def metadata_fields(spec: CsvIngestionSpec) -> tuple[str, ...]:
    meta = ("_source", "_line") if spec.kafka.include_metadata else ()
    return meta + (("_id",) if spec.kafka.include_event_id else ())


def registry_secret() -> dict[str, str] | None:
    """The keys of the registry's Secret, when one is mounted."""
    where = os.environ.get(SECRET_DIR_ENV)
    if not where or not Path(where).is_dir():
        return None
    # Secret volumes hold ..data and ..timestamp symlinks besides the keys.
    return {f.name: f.read_text().strip() for f in sorted(Path(where).iterdir())
            if not f.name.startswith(".") and f.is_file()}


def registry_of(spec: CsvIngestionSpec) -> Registry:
    reg = spec.kafka.schema_registry
    assert reg is not None
    secret = registry_secret()
    return Registry(reg.url, Auth.from_secret(secret) if secret else None)


def read_sample(source: CsvSource, header: Header, layout: Layout, rows: int
                ) -> list[list[str]]:
    """The first ``rows`` records of the file, split by Python's csv."""
    buf = bytearray()
    with source.open(header.data_offset, buffer_bytes=SAMPLE_BLOCK) as f:
        while len(buf) < SAMPLE_MAX_BYTES and buf.count(b"\n") <= rows:
            block = f.read(SAMPLE_BLOCK)
            if not block:
                buf += b"\n"
                break
            buf += block
    return sample_rows(bytes(buf), layout.encoding, layout.python_dialect(), rows)


def settle_source(spec: CsvIngestionSpec, layout: Layout, source: CsvSource, header: Header,
                  ledger: SchemaLedger) -> Settled:
    """:func:`settle` for a file whose header was read."""
    infer_types = spec.format.infer_types
    rows = infer_types.sample_rows if infer_types is not None else 0

    def sample() -> list[list[str]]:
        return read_sample(source, header, layout, rows)

    registry = registry_of(spec) if needs_registry(spec) else None
    return settle(spec, layout.columns, sample, ledger, registry)


def _schema_of(fmt: ValueFormat, name: str, columns: tuple[str, ...], types: list[ColumnType],
               metadata: tuple[str, ...]) -> dict[str, Any]:
    if fmt is ValueFormat.AVRO:
        return avro.record_schema(name, columns, types, metadata)
    return jsonschema.object_schema(name, columns, types, metadata)


def _fit(
    fmt: ValueFormat, reg: Registered, columns: tuple[str, ...],
    declared: dict[str, ColumnType], metadata: tuple[str, ...],
) -> tuple[tuple[str, ColumnType], ...]:
    """The file's columns in the registered schema's order and types, or why the file cannot be
    written with it."""
    where = f"subject {reg.subject} version {reg.version}"
    module = avro if fmt is ValueFormat.AVRO else jsonschema
    fields, meta = module.columns_of(reg.schema)
    by_field = {avro.field_name(c) if fmt is ValueFormat.AVRO else c: c for c in columns}
    missing = [f for f, _ in fields if f not in by_field]
    if missing:
        raise ConfigError(f"the schema ({where}) has the field(s) {', '.join(missing)}, which "
                          "the file has no column for")
    extra = sorted(set(by_field) - {f for f, _ in fields})
    if extra:
        raise ConfigError(f"the file's column(s) {', '.join(by_field[f] for f in extra)} are "
                          f"not in the schema ({where}): their values would be lost")
    if meta != metadata:
        raise ConfigError(f"the schema ({where}) has the metadata fields {list(meta)}, the "
                          f"ingestion writes {list(metadata)} (includeEventId, includeMetadata)")
    out: list[tuple[str, ColumnType]] = []
    for fname, t in fields:
        column = by_field[fname]
        mine = declared.get(column)
        if mine is not None and (mine.type, mine.nullable) != (t.type, t.nullable):
            raise ConfigError(
                f"column {column} is declared {mine.type}{' nullable' if mine.nullable else ''}"
                f", the schema ({where}) has {t.type}{' nullable' if t.nullable else ''}")
        if mine is not None:  # the declaration's reading options (format, zone) apply
            t = ColumnType(t.type, t.nullable, t.precision, t.scale, mine.format, mine.timezone)
        out.append((column, t))
    return tuple(out)


def settle(
    spec: CsvIngestionSpec,
    columns: tuple[str, ...],
    sample: Callable[[], list[list[str]]],
    ledger: SchemaLedger,
    registry: Registry | None,
) -> Settled:
    """The schema of this ingestion: the recorded one, or settled now from the file's
    ``columns`` and ``sample()`` (its first rows, split) and recorded."""
    kafka = spec.kafka
    declared = {c: ColumnType.of(t) for c, t in spec.format.column_types.items()}
    metadata = metadata_fields(spec)
    if not needs_registry(spec):
        return Settled(str(kafka.value_format.value),
                       tuple((c, declared.get(c, ColumnType(STRING))) for c in columns))
    recorded = ledger.schema()
    if recorded is not None and int(recorded.get("restart", 0)) == spec.restart:
        settled = Settled.from_wire(recorded)
        if settled.value_format != kafka.value_format.value or (
                settled.key is None) != (kafka.key_format is KeyFormat.STRING):
            raise ConfigError(
                f"the ingestion's rows are written as {settled.value_format} values"
                f"{' with Avro keys' if settled.key else ''} (status.schema); raise spec.restart "
                "to start over in another format")
        if sorted(c for c, _ in settled.columns) != sorted(columns):
            raise ConfigError(
                f"the file's columns ({', '.join(columns)}) are not the ingestion's schema's "
                f"({', '.join(c for c, _ in settled.columns)}), settled on its first file")
        return settled
    assert registry is not None
    avro_values = kafka.value_format is ValueFormat.AVRO
    types = dict(declared)
    if spec.format.infer_types is not None:
        undeclared = [c for c in columns if c not in declared]
        if undeclared:
            rows = sample()
            index = [columns.index(c) for c in undeclared]
            inferred = infer(undeclared, ([r[i] for i in index] if len(r) == len(columns) else []
                                          for r in rows), avro_values)
            log.info("Inferred column types from %d sampled rows: %s", len(rows),
                     {c: t.to_wire() for c, t in inferred.items()})
            types |= inferred
    ordered = tuple((c, types.get(c, ColumnType(STRING))) for c in columns)
    name = record_name(spec)
    reg_spec = kafka.schema_registry
    assert reg_spec is not None
    value: Subject | None = None
    if kafka.value_format is not ValueFormat.JSON:
        subject = value_subject(spec, name)
        stype = SCHEMA_TYPES[kafka.value_format]
        if reg_spec.auto_register:
            schema = _schema_of(kafka.value_format, name, columns, [t for _, t in ordered],
                                metadata)
            got = registry.register(subject, schema, stype)
        else:
            latest = registry.latest(subject)
            if latest is None:
                raise ConfigError(f"no schema is registered under the subject {subject}, and "
                                  "schemaRegistry.autoRegister is false")
            if latest.schema_type != stype:
                raise ConfigError(f"the subject {subject} holds a {latest.schema_type} schema, "
                                  f"the ingestion writes {kafka.value_format}")
            ordered = _fit(kafka.value_format, latest, columns, declared, metadata)
            got = latest
        value = Subject.of(got)
        log.info("Writing with the schema of subject %s version %d (id %d)", got.subject,
                 got.version, got.id)
    key: Subject | None = None
    if kafka.key_format is KeyFormat.AVRO:
        key_types = dict(ordered)
        key_schema = avro.record_schema(f"{name}Key", tuple(kafka.key_columns),
                                        [key_types[c] for c in kafka.key_columns], ())
        key_subject = f"{kafka.topic}-key"
        if reg_spec.auto_register:
            key = Subject.of(registry.register(key_subject, key_schema, "AVRO"))
        else:
            latest = registry.latest(key_subject)
            if latest is None or avro.columns_of(latest.schema)[0] != avro.columns_of(
                    key_schema)[0]:
                raise ConfigError(f"the key columns do not fit the latest schema of "
                                  f"{key_subject} (schemaRegistry.autoRegister is false)")
            key = Subject.of(latest)
    settled = Settled(str(kafka.value_format.value), ordered, value, key, spec.restart)
    kept = ledger.record_schema(settled.to_wire())
    if kept != settled.to_wire():
        return settle(spec, columns, sample, ledger, registry)  # another pod settled first
    return settled
