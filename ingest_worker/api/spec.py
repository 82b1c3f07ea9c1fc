"""The CsvIngestion spec: what the user asks for, parsed once into frozen models.

The CRD in ``crds/`` is generated from these models and those of :mod:`.status`
(``python -m ingest_operator.crdgen``), and a test fails when the committed file is stale. Field
names are camelCase on the wire (Kubernetes style) and snake_case in Python; every field has a
description so ``kubectl explain`` documents it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from ingest_worker.plan.globs import names_many

TOPIC_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ApiModel(BaseModel):
    """A part of the resource: camelCase on the wire, frozen, documented field by field."""


    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        # Validators are built on first use: a worker validates a spec and never builds the
        # status models (15-25 ms of its start).
        defer_build=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict as it appears in the resource (defaults included)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretRef(ApiModel):
    """A Secret in the ingestion's namespace."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253)
    """Name of the Secret."""


class Compression(StrEnum):
    AUTO = "auto"
    NONE = "none"
    GZIP = "gzip"
    BZ2 = "bz2"
    ZSTD = "zstd"


class SourceVolume(ApiModel):
    """A PersistentVolumeClaim mounted read-only into the worker, for a file on a volume."""

    claim_name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253)
    """Name of the PersistentVolumeClaim, in the ingestion's namespace."""
    mount_path: str = Field(default="/data", pattern=r"^/")
    """Where the claim is mounted in the worker; source.url is a path under it."""


class OnSourceChange(StrEnum):
    FAIL = "Fail"
    RESTART = "Restart"


class Source(ApiModel):
    """Where the CSV file is."""

    url: str = Field(min_length=1)
    """URL of the file: s3://bucket/key, gs://bucket/object, azure://container/blob,
    http(s)://..., or a path on a mounted volume (see volume) or file://. On s3://, gs://,
    azure:// and paths it may name many files: a URL ending in / is a prefix (every file
    under it, at any depth), and one with *, ? or [...] is a glob (* and ? never cross /).
    The files are listed once, when the first run starts, and recorded."""
    secret_ref: SecretRef | None = None
    """Secret with the credentials for the source, in the cloud's conventional keys, handed to
    the worker as environment variables (and mounted at /var/run/csvkafka/source-secret):
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL;
    GOOGLE_APPLICATION_CREDENTIALS_JSON (a service-account key), or GOOGLE_APPLICATION_CREDENTIALS
    naming a key file of the Secret under that mount; AZURE_STORAGE_CONNECTION_STRING, or
    AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN; HTTP_BEARER_TOKEN,
    or HTTP_USERNAME and HTTP_PASSWORD. Without it the cloud SDK's default chain (workload
    identity) is used."""
    volume: SourceVolume | None = None
    """A PersistentVolumeClaim holding the file, mounted read-only; url is a path under its
    mountPath."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint of an S3-compatible store (MinIO, Ceph, ...) or of a GCS emulator; the cloud's
    public endpoint when unset."""
    compression: Compression = Compression.AUTO
    """Compression of the file; auto detects it from the extension (.gz, .bz2, .zst)."""
    expected_version: str | None = None
    """If set, the object's version (S3 version id or ETag, GCS generation, Azure ETag) must
    equal this, or the ingestion fails."""
    on_change: OnSourceChange = OnSourceChange.FAIL
    """What to do when the object changed since the first attempt: Fail, or Restart from zero."""

    @model_validator(mode="after")
    def _path_on_the_volume(self) -> Source:
        if self.volume is not None:
            path = self.url.removeprefix("file://")
            root = self.volume.mount_path.rstrip("/") + "/"
            if not path.startswith(root):
                raise ValueError(f"url {self.url} is not under volume.mountPath {root}")
        return self


class ColumnType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DECIMAL = "decimal"
    DATE = "date"
    TIMESTAMP = "timestamp"


TIMEZONE_PATTERN = r"^(UTC|Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"


class TypedColumn(ApiModel):
    """A column's type with its options: the object form of a columnTypes entry."""

    type: ColumnType
    """The type: string, int, float, bool, decimal, date or timestamp."""
    nullable: bool | None = None
    """Whether an empty field is null. Default: true for every type but string, whose empty
    field is the empty string. An empty field in a column that is not nullable is a bad row."""
    precision: int | None = Field(default=None, ge=1, le=38)
    """decimal: the number of digits in all (default 38)."""
    scale: int | None = Field(default=None, ge=0, le=38)
    """decimal: the digits after the point (default 0). A value with more is a bad row: it is
    never rounded."""
    format: str | None = Field(default=None, min_length=1)
    """date, timestamp: iso8601 (the default), epochSeconds, epochMillis, epochMicros
    (timestamp only), or a pattern of %Y %m %d %H %M %S %f (1 to 9 fraction digits) %z (Z or
    +HH:MM) and literal characters, such as %d/%m/%Y %H:%M."""
    timezone: str | None = Field(default=None, pattern=TIMEZONE_PATTERN)
    """timestamp: the zone of a value written without one, as UTC or an offset (+01:00).
    Default UTC."""

    @model_validator(mode="after")
    def _options_of_the_type(self) -> TypedColumn:
        t = self.type
        if (self.precision is not None or self.scale is not None) and t is not ColumnType.DECIMAL:
            raise ValueError(f"precision and scale are for decimal columns, not {t}")
        if (self.scale or 0) > (self.precision or 38):
            raise ValueError(f"scale {self.scale} exceeds precision {self.precision or 38}")
        if self.format is not None and t not in (ColumnType.DATE, ColumnType.TIMESTAMP):
            raise ValueError(f"format is for date and timestamp columns, not {t}")
        if self.timezone is not None and t is not ColumnType.TIMESTAMP:
            raise ValueError(f"timezone is for timestamp columns, not {t}")
        return self


class TypeInference(ApiModel):
    """Types inferred from the first rows of the file, for the columns columnTypes leaves out."""

    sample_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    """How many rows to sample. Each column gets the narrowest type every sampled value fits
    (bool, int, float, date, timestamp, else string), nullable if a sampled field was empty. A
    later row that does not fit is a bad row: the schema never changes mid-file."""


class CsvFormat(ApiModel):
    """The CSV dialect of the file."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    """Field delimiter, one character."""
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    """Quote character, one character. A quote inside a quoted field is doubled."""
    escape_char: str | None = Field(default=None, min_length=1, max_length=1)
    """Escape character, if the file uses one instead of doubled quotes."""
    header: bool = True
    """Whether the first record is a header naming the columns."""
    columns: list[str] | None = Field(default=None, min_length=1)
    """Column names. Required when header is false; when header is true they override it."""
    encoding: str = "utf-8"
    """Text encoding of the file. A UTF-8 byte-order mark is skipped."""
    column_types: dict[str, ColumnType | TypedColumn] = Field(default_factory=dict)
    """Type of each named column (others stay strings, unless inferTypes is set): a type name
    (string, int, float, bool, decimal, date, timestamp) or an object with the type and its
    options (nullable, precision, scale, format, timezone). A value that does not convert makes
    its row a bad row."""
    infer_types: TypeInference | None = None
    """Infer the types of the columns columnTypes leaves out from the first rows of the file
    (valueFormat avro or jsonSchema). Inferred once per ingestion, recorded with the schema in
    status, and reused by every unit, file and resume."""
    quoted_newlines: bool = True
    """Whether quoted fields may hold line breaks. False lets a huge file be cut into shards at
    the first newline after each boundary, without reading the file for its quotes first."""


class TopicCreation(ApiModel):
    """The topic to create when it does not exist (the data topic, and the dead-letter topic)."""

    partitions: int = Field(default=1, ge=1)
    """Partitions of a created topic: the ceiling of consumer parallelism on it."""
    replication_factor: int = Field(default=-1, ge=-1)
    """Replicas of each partition; -1: the broker's default.replication.factor."""
    config: dict[str, str] = Field(default_factory=dict)
    """Topic configs (retention.ms, max.message.bytes, cleanup.policy, ...)."""


class ValueFormat(StrEnum):
    JSON = "json"
    AVRO = "avro"
    JSON_SCHEMA = "jsonSchema"


class KeyFormat(StrEnum):
    STRING = "string"
    AVRO = "avro"


class SubjectNameStrategy(StrEnum):
    TOPIC = "TopicNameStrategy"
    RECORD = "RecordNameStrategy"
    TOPIC_RECORD = "TopicRecordNameStrategy"


RECORD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class SchemaRegistry(ApiModel):
    """A Confluent-compatible Schema Registry, for valueFormat avro or jsonSchema."""

    url: str = Field(pattern=r"^https?://")
    """Base URL of the registry."""
    secret_ref: SecretRef | None = None
    """Secret with the registry's credentials: username and password (basic auth), or token
    (a bearer token)."""
    subject_name_strategy: SubjectNameStrategy = SubjectNameStrategy.TOPIC
    """The subject of the value schema: TopicNameStrategy (<topic>-value), RecordNameStrategy
    (the record's full name) or TopicRecordNameStrategy (<topic>-<record name>)."""
    auto_register: bool = True
    """Register the file's schema when the subject's compatibility allows it. False: write with
    the subject's latest version, and fail before any row is produced when the file does not
    fit it."""
    record_name: str | None = Field(default=None, pattern=RECORD_NAME_PATTERN, max_length=255)
    """The full name of the record (namespace.Name). Default: csvkafka.<the topic, with
    characters other than letters, digits and _ as _>."""


class Delivery(StrEnum):
    AT_LEAST_ONCE = "atLeastOnce"
    EXACTLY_ONCE = "exactlyOnce"


class Kafka(ApiModel):
    """Where the rows go."""

    bootstrap_servers: str = Field(min_length=1)
    """Comma-separated host:port list of Kafka brokers."""
    topic: str = Field(pattern=TOPIC_PATTERN)
    """Topic that receives one message per row."""
    key_columns: list[str] = Field(default_factory=list)
    """Columns whose values form the message key (joined with '|'); none means no key."""
    dead_letter_topic: str | None = Field(default=None, pattern=TOPIC_PATTERN)
    """Topic that receives bad rows as raw bytes, with the reason and line number in headers."""
    create_topics: TopicCreation | None = None
    """Create the topic (and the dead-letter topic) if missing. Without it a missing topic fails
    the ingestion with a message that names it, as on a cluster with auto-creation off."""
    include_event_id: bool = True
    """Add _id to each message's JSON value: a deterministic event id (the source's identity and
    the row's byte offset), by which consumers drop the duplicates at-least-once allows."""
    include_metadata: bool = False
    """Also add _source (the file's URL) and _line (the row's line number). Off by default: the
    URL repeated in every message costs bytes on the wire, in the broker and in memory."""
    producer_properties: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka producer properties (compression.type, linger.ms, security.protocol,
    ...). They override the worker's defaults."""
    secret_ref: SecretRef | None = None
    """Secret whose keys are librdkafka properties (sasl.username, sasl.password, ssl.ca.pem,
    ...), for SASL/TLS."""
    retry_budget_seconds: int = Field(default=300, ge=1)
    """How long delivery to Kafka may keep failing (retried with exponential backoff and jitter)
    before the ingestion fails."""
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    """atLeastOnce: a crash re-sends at most one checkpoint interval (consumers drop those by
    _id). exactlyOnce: each checkpoint interval is one Kafka transaction holding its rows, its
    dead letters and its checkpoint record (in offsetsTopic); a crash aborts it and the next
    attempt resumes from the last commit. Consumers must read with
    isolation.level=read_committed."""
    value_format: ValueFormat = ValueFormat.JSON
    """The messages' values: json (a JSON object per row), avro (Avro's binary encoding) or
    jsonSchema (the same JSON, with a JSON Schema), both of the last in Confluent's wire format
    (a magic byte and the schema's id) with the schema in schemaRegistry."""
    key_format: KeyFormat = KeyFormat.STRING
    """The messages' keys: string (the key columns joined with '|') or avro (a record of the
    key columns, under the subject <topic>-key)."""
    schema_registry: SchemaRegistry | None = None
    """The Schema Registry, required by valueFormat avro or jsonSchema and keyFormat avro."""
    offsets_topic: str = Field(default="csvkafka-offsets", pattern=TOPIC_PATTERN)
    """exactlyOnce: the compacted topic of the checkpoints committed with the rows, keyed by
    ingestion and work unit. Created (compacted) when missing; a topic retention could empty
    (cleanup.policy with delete) is refused."""

    @model_validator(mode="after")
    def _registry_when_typed(self) -> Kafka:
        typed = self.value_format is not ValueFormat.JSON or self.key_format is KeyFormat.AVRO
        if typed and self.schema_registry is None:
            raise ValueError("valueFormat avro or jsonSchema, and keyFormat avro, need "
                             "schemaRegistry")
        if self.key_format is KeyFormat.AVRO and not self.key_columns:
            raise ValueError("keyFormat avro needs keyColumns")
        return self


class CheckpointInterval(ApiModel):
    """How often progress is saved. A checkpoint never passes an unacknowledged row."""

    every_rows: int = Field(default=250_000, ge=1)
    """Save a checkpoint at most every this many rows (a crash re-sends at most this many)."""
    every_seconds: int = Field(default=5, ge=1)
    """Save a checkpoint at least every this many seconds while rows flow."""


class ErrorPolicy(ApiModel):
    """When bad rows should fail the ingestion. By default they never do."""

    max_errors: int | None = Field(default=None, ge=0)
    """Fail once more than this many rows are bad."""
    max_error_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    """Fail once the ratio of bad rows to rows read exceeds this (checked after 1000 rows)."""


class Worker(ApiModel):
    """The worker Job."""

    image: str | None = None
    """Container image of the worker; defaults to the operator's."""
    parallelism: int = Field(default=2, ge=1, le=64)
    """Number of parsing and producing processes in the worker's pool."""
    resources: dict[str, dict[str, str]] | None = None
    """Compute resources of the worker container (requests, limits)."""
    backoff_limit: int = Field(default=6, ge=0)
    """How many failed pods the Job tolerates before the attempt fails."""
    service_account_name: str | None = None
    """ServiceAccount to run as instead of the one the operator creates (for workload identity)."""
    pods: int = Field(default=1, ge=1, le=32)
    """Worker pods at a time (the Indexed Job's parallelism). Above 1, or with a prefix or glob
    source, the run is cut into work units (files, and byte-range shards of files larger than
    shardBytes) that the pods share, each unit with its own checkpoint."""
    shard_bytes: int = Field(default=1 << 30, ge=1 << 20)
    """An uncompressed file larger than this is cut into shards of about this size when the
    run has work units (see pods and ordering)."""


class Ordering(StrEnum):
    PER_UNIT = "PerUnit"
    STRICT = "Strict"


class CsvIngestionSpec(ApiModel):
    """Desired state of a CsvIngestion: which file goes into which topic, and how."""

    source: Source
    """Where the CSV file is."""
    kafka: Kafka
    """Where the rows go."""
    format: CsvFormat = Field(default_factory=CsvFormat)
    """The CSV dialect."""
    checkpoint: CheckpointInterval = Field(default_factory=CheckpointInterval)
    """Checkpoint interval."""
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)
    """Error policy for bad rows."""
    worker: Worker = Field(default_factory=Worker)
    """The worker Job."""
    retry: int = Field(default=0, ge=0)
    """Change (bump) this to retry a Failed ingestion; any other spec edit also retries."""
    restart: int = Field(default=0, ge=0)
    """Raise this (above status.observedRestart) to ingest the file again from the beginning,
    even a Completed ingestion: the checkpoint and counters are discarded and a new run starts.
    A counter, not a flag, so a GitOps tool never has to set it back."""
    suspend: bool = False
    """Stop the worker and keep the checkpoint; set back to false to resume."""
    ordering: Ordering = Ordering.PER_UNIT
    """PerUnit: rows with the same key keep their file order within a work unit (a file, or
    a shard of one); across units there is no order. Strict: a file is never cut into shards,
    so the order holds within each file (one pod per file: no speed-up within a file)."""

    @model_validator(mode="after")
    def _inference_needs_a_schema(self) -> CsvIngestionSpec:
        if self.format.infer_types is not None and self.kafka.value_format is ValueFormat.JSON:
            raise ValueError("format.inferTypes needs kafka.valueFormat avro or jsonSchema: the "
                             "inferred types are recorded as the registered schema")
        return self

    @property
    def has_units(self) -> bool:
        """Whether a run is cut into work units: a prefix or glob source, or more than one
        pod. A single file with one pod is the one-unit case, with no ``status.units``."""
        return self.worker.pods > 1 or names_many(self.source.url)
