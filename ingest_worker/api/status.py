"""The CsvIngestion status, and the one way to write it: :func:`status_patch`.

Written by two parties through the status subresource, each owning its own fields: the operator
(phase, run, jobName, conditions, times, message, observedRestart) and the worker (checkpoint,
counters, progress, rate and ETA, attempts, history, sourceVersion, lastError). Small and
scalar: etcd objects stay small. An ingestion of many files or shards also has ``units``
(:mod:`.units`), bounded in size whatever the number of units; a single file with one pod has
none.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from ingest_worker.api.spec import ApiModel
from ingest_worker.api.units import UnitsStatus


class Phase(StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"


class CheckpointStatus(ApiModel):
    """The last saved checkpoint: every row before it is acknowledged by Kafka."""

    byte_offset: int = Field(default=0, ge=0)
    """Byte offset in the (uncompressed) file of the first row not yet known to be delivered."""
    row: int = Field(default=0, ge=0)
    """Number of data rows before byteOffset (good and bad)."""
    line: int = Field(default=1, ge=1)
    """Physical line number (1-based) of the record at byteOffset."""
    time: str | None = None
    """When it was saved (RFC 3339)."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A standard Kubernetes condition."""

    type: str = Field(min_length=1, max_length=316)
    """Type of the condition: Ready, Progressing or Failed."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    reason: str = Field(default="", max_length=1024)
    """One-word CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail of the last transition."""
    last_transition_time: str | None = None
    """When the status of the condition last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the condition was set from."""


HISTORY_MAX = 3
"""Attempts kept in ``status.history``."""
HISTORY_MESSAGE_MAX = 1024


class AttemptRecord(ApiModel):
    """How one attempt (one worker pod) ended."""

    attempt: int = Field(ge=1)
    """The attempt's number (status.attempts when it started)."""
    run: int = Field(default=0, ge=0)
    """The run the attempt belonged to."""
    time: str | None = None
    """When it ended (RFC 3339)."""
    outcome: str = Field(min_length=1, max_length=64)
    """Completed, Failed, or the reason the pod was stopped (OOMKilled)."""
    message: str = Field(default="", max_length=HISTORY_MESSAGE_MAX)
    """The attempt's summary or fatal error."""

    @field_validator("message", mode="before")
    @classmethod
    def _cut(cls, value: object) -> object:
        # A long error is cut to fit, not refused: the record of an attempt must be written.
        return value[:HISTORY_MESSAGE_MAX] if isinstance(value, str) else value


def with_attempt(history: list[AttemptRecord], record: AttemptRecord) -> list[AttemptRecord]:
    """``history`` with ``record`` first (replacing an earlier record of the same attempt),
    bounded to the last :data:`HISTORY_MAX` attempts, newest first."""
    others = [r for r in history if r.attempt != record.attempt]
    return sorted([record, *others], key=lambda r: r.attempt, reverse=True)[:HISTORY_MAX]


class SchemaColumn(ApiModel):
    """A column of the schema, as the worker converts its fields."""

    name: str
    """The CSV column."""
    type: str
    """string, int, float, bool, decimal, date or timestamp."""
    nullable: bool | None = None
    precision: int | None = None
    scale: int | None = None
    format: str | None = None
    timezone: str | None = None


class SchemaStatus(ApiModel):
    """The schema the ingestion writes with: settled by its first run (declared and inferred
    types, registered or taken from the registry), then reused by every unit, file and resume
    until spec.restart starts over."""

    value_format: str
    """json, avro or jsonSchema."""
    subject: str | None = None
    """The value schema's subject in the Schema Registry."""
    version: int | None = None
    """Its version under the subject."""
    id: int | None = None
    """Its id: the one every value's 5-byte prefix carries."""
    key_subject: str | None = None
    key_version: int | None = None
    key_id: int | None = None
    columns: list[SchemaColumn] = Field(default_factory=list)
    """The columns in the order the values write them."""
    restart: int = 0
    """The spec.restart it was settled for."""


class CsvIngestionStatus(ApiModel):
    """Observed state of a CsvIngestion."""

    phase: Phase | None = None
    """Lifecycle phase: Pending, InProgress, Completed or Failed."""
    message: str | None = None
    """What is happening, or why the ingestion failed."""
    checkpoint: CheckpointStatus | None = None
    """The last saved checkpoint; a new attempt resumes from here."""
    rows_read: int = Field(default=0, ge=0)
    """Data rows read from the file so far (good and bad), up to the checkpoint."""
    rows_published: int = Field(default=0, ge=0)
    """Rows acknowledged by Kafka, up to the checkpoint."""
    rows_failed: int = Field(default=0, ge=0)
    """Bad rows (sent to the dead-letter topic if one is set), up to the checkpoint."""
    bytes_read: int = Field(default=0, ge=0)
    """Bytes of the file read, up to the checkpoint."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Size of the file in bytes, when the source reports it."""
    progress: str | None = None
    """bytesRead / bytesTotal as a percentage, when the size is known."""
    rows_per_second: float | None = Field(default=None, ge=0)
    """Rows read per second while a worker runs (smoothed over its checkpoints); absent when no
    worker runs."""
    eta: str | None = None
    """Time left at the current rate (4m10s, 1h02m, 45s), from the bytes left; absent when the
    size is unknown (a compressed source) or no worker runs."""
    start_time: str | None = None
    """When the first worker started (RFC 3339)."""
    completion_time: str | None = None
    """When the ingestion completed (RFC 3339)."""
    attempts: int = Field(default=0, ge=0)
    """Worker pods started so far, over all runs (a Job's pod retries included)."""
    run: int = Field(default=0, ge=0)
    """Number of the current run: 1 for the first Job, one more for each retry by spec edit or
    resume after suspend."""
    job_name: str | None = None
    """Name of the current run's worker Job."""
    source_url: str | None = None
    """The source URL the checkpoint belongs to; a new run with another URL starts from zero."""
    source_version: str | None = None
    """The source object's version seen by the first worker (ETag, version id, mtime)."""
    last_error: str | None = None
    """The last fatal error reported by a worker of the current run."""
    history: list[AttemptRecord] = Field(default_factory=list, max_length=HISTORY_MAX)
    """How the last three attempts ended, newest first."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation of the spec the current run was started from."""
    observed_restart: int = Field(default=0, ge=0)
    """The spec.restart the current run was started with: raising spec.restart above it starts
    a new run from the beginning."""
    schema_: SchemaStatus | None = Field(default=None, alias="schema")
    """The schema the values are written with (valueFormat avro or jsonSchema, keyFormat avro):
    the subject, version and id in the registry, and the columns' types."""
    units: UnitsStatus | None = None
    """The work units of an ingestion of many files or shards: counts by state, totals, the
    units in progress and the failed ones. Absent for a single file."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Failed conditions."""


def status_patch(**fields: Any) -> dict[str, Any]:
    """A JSON merge patch of ``status`` from :class:`CsvIngestionStatus` field names.

    The model checks the names and values and gives the camelCase names of the CRD: no status
    field is spelled by hand. A field given as None is written as null, which removes it.
    """
    model = CsvIngestionStatus.model_validate(fields)  # an unknown name or a bad value fails here
    wire = model.model_dump(by_alias=True, mode="json", include=set(fields), exclude_none=True)
    for name, value in fields.items():
        if value is None:
            wire[CsvIngestionStatus.model_fields[name].alias or name] = None
    return wire
