"""``csv-ingest``: the by-hand form of the worker, and the entry point of the operator's Job.

Flags map onto :class:`~ingest_worker.api.spec.CsvIngestionSpec` (``--spec`` loads one from YAML,
a CsvIngestion manifest or a bare spec; flags given on top override it), so a person and the
operator run exactly the same code.
"""

from __future__ import annotations

import os

# pydantic scans every installed distribution's entry points for plugins when it builds the
# first model (up to 0.1 s of a start); the worker uses none. Before pydantic is imported.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from ingest_worker.api.spec import (
    ColumnType,
    CsvIngestionSpec,
    Delivery,
    KeyFormat,
    SubjectNameStrategy,
    ValueFormat,
)
from ingest_worker.checkpoint import CheckpointStore, FileCheckpointStore, MemoryCheckpointStore
from ingest_worker.exitcodes import EXIT_CONFIG
from ingest_worker.logs import setup_logging
from ingest_worker.run import IngestResult, install_signal_handlers, run_ingestion, tune_gc
from ingest_worker.schema.settle import SECRET_DIR_ENV

if TYPE_CHECKING:
    from ingest_worker.kafka.offsets import CheckpointKey


class UsageError(Exception):
    pass


def _char(value: str) -> str:
    # Let people type \t for a tab.
    value = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one character, got {value!r}")
    return value


def _kv(value: str) -> tuple[str, str]:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    k, v = value.split("=", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csv-ingest", description="Stream a CSV file into Kafka, resumably, at least once."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="ingest one CSV file into a topic")
    r.add_argument("source", nargs="?", help="path or URL (s3://, gs://, azure://, https://)")
    r.add_argument("--spec", type=Path, help="CsvIngestion manifest or bare spec (YAML)")
    r.add_argument("--topic")
    r.add_argument("--bootstrap-servers")
    r.add_argument("--key", action="append", dest="keys", metavar="COLUMN",
                   help="key column (repeat for a composite key, joined with '|')")
    r.add_argument("--delimiter", type=_char)
    r.add_argument("--quote-char", type=_char)
    r.add_argument("--escape-char", type=_char)
    r.add_argument("--no-header", action="store_true", help="the first record is data")
    r.add_argument("--columns", help="comma-separated column names")
    r.add_argument("--encoding")
    r.add_argument("--compression", choices=["auto", "none", "gzip", "bz2", "zstd"])
    r.add_argument("--type", action="append", dest="types", type=_kv, metavar="COL=TYPE",
                   help=f"column type: {', '.join(t.value for t in ColumnType)}; a type with "
                   "options is JSON: c={\"type\":\"decimal\",\"precision\":10,\"scale\":2}")
    r.add_argument("--infer-types", type=int, metavar="ROWS",
                   help="infer the undeclared columns' types from the first ROWS rows")
    r.add_argument("--value-format", choices=[f.value for f in ValueFormat])
    r.add_argument("--key-format", choices=[f.value for f in KeyFormat])
    r.add_argument("--schema-registry", metavar="URL", help="Schema Registry (Confluent API)")
    r.add_argument("--schema-registry-secret-dir", type=Path, metavar="DIR",
                   help="the registry's credentials: files username and password, or token")
    r.add_argument("--subject-name-strategy", choices=[s.value for s in SubjectNameStrategy])
    r.add_argument("--record-name", help="the Avro record's full name (namespace.Name)")
    r.add_argument("--no-auto-register", action="store_true",
                   help="write with the subject's latest schema; fail when the file does not "
                   "fit it")
    r.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="checkpoint file: resume from it, save progress to it")
    r.add_argument("--checkpoint-rows", type=int)
    r.add_argument("--checkpoint-seconds", type=int)
    r.add_argument("--dead-letter-topic")
    r.add_argument("--max-errors", type=int)
    r.add_argument("--max-error-ratio", type=float)
    r.add_argument("--retry-budget-seconds", type=int)
    r.add_argument("--parallelism", type=int)
    r.add_argument("--exactly-once", action="store_true",
                   help="one Kafka transaction per checkpoint interval (needs --transactional-id)")
    r.add_argument("--transactional-id", help="exactly-once: the producer's transactional id, "
                   "stable across restarts of this ingestion; also its checkpoint's key")
    r.add_argument("--offsets-topic", help="exactly-once: the compacted topic of the "
                   "checkpoints (default csvkafka-offsets)")
    r.add_argument("--producer-property", action="append", dest="props", type=_kv,
                   metavar="KEY=VALUE", help="librdkafka producer property (repeatable)")
    r.add_argument("--metadata", action="store_true", help="add _source and _line to values")
    r.add_argument("--no-event-id", action="store_true", help="no _id in values")
    r.add_argument("--no-metadata", action="store_true",
                   help="no _source, _line or _id in values (same as --no-event-id)")
    r.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: off)")
    r.add_argument("--errors-log", type=Path, metavar="FILE",
                   help="bad rows as JSON lines (line, reason)")
    # Kept so that existing scripts run: workers are threads, which the compiled core lets use
    # every core (it releases the GIL), so processes would only cost memory.
    r.add_argument("--worker-processes", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("--log-level", default="INFO")
    return p


def _load_spec_file(path: Path) -> dict[str, Any]:
    import yaml  # only with --spec

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not YAML: {e}") from e
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: not a mapping")
    if doc.get("kind") == "CsvIngestion" or "apiVersion" in doc:
        doc = doc.get("spec") or {}
    return dict(doc)


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for k in parents:
        d = d.setdefault(k, {})
    d[leaf] = value


def spec_from_args(args: argparse.Namespace) -> CsvIngestionSpec:
    """The spec the flags describe (on top of ``--spec``, if given)."""
    raw: dict[str, Any] = _load_spec_file(args.spec) if args.spec else {}
    flags: list[tuple[str, Any]] = [
        ("source.url", args.source),
        ("source.compression", args.compression),
        ("kafka.topic", args.topic),
        ("kafka.bootstrapServers", args.bootstrap_servers),
        ("kafka.keyColumns", args.keys),
        ("kafka.deadLetterTopic", args.dead_letter_topic),
        ("kafka.retryBudgetSeconds", args.retry_budget_seconds),
        ("kafka.offsetsTopic", args.offsets_topic),
        ("kafka.valueFormat", args.value_format),
        ("kafka.keyFormat", args.key_format),
        ("kafka.schemaRegistry.url", args.schema_registry),
        ("kafka.schemaRegistry.subjectNameStrategy", args.subject_name_strategy),
        ("kafka.schemaRegistry.recordName", args.record_name),
        ("format.inferTypes.sampleRows", args.infer_types),
        ("format.delimiter", args.delimiter),
        ("format.quoteChar", args.quote_char),
        ("format.escapeChar", args.escape_char),
        ("format.encoding", args.encoding),
        ("checkpoint.everyRows", args.checkpoint_rows),
        ("checkpoint.everySeconds", args.checkpoint_seconds),
        ("errors.maxErrors", args.max_errors),
        ("errors.maxErrorRatio", args.max_error_ratio),
        ("worker.parallelism", args.parallelism),
    ]
    for path, value in flags:
        if value is not None:
            _set(raw, path, value)
    if args.no_header:
        _set(raw, "format.header", False)
    if args.columns:
        _set(raw, "format.columns", [c.strip() for c in args.columns.split(",")])
    if args.types:
        types = dict(raw.get("format", {}).get("columnTypes", {}))
        types.update({c: json.loads(t) if t.startswith("{") else t for c, t in args.types})
        _set(raw, "format.columnTypes", types)
    if args.no_auto_register:
        _set(raw, "kafka.schemaRegistry.autoRegister", False)
    if args.schema_registry_secret_dir:
        os.environ[SECRET_DIR_ENV] = str(args.schema_registry_secret_dir)
    if args.props:
        props = dict(raw.get("kafka", {}).get("producerProperties", {}))
        props.update(dict(args.props))
        _set(raw, "kafka.producerProperties", props)
    if args.exactly_once:
        _set(raw, "kafka.delivery", "exactlyOnce")
    if args.metadata:
        _set(raw, "kafka.includeMetadata", True)
    if args.no_metadata:
        _set(raw, "kafka.includeMetadata", False)
    if args.no_event_id or args.no_metadata:
        _set(raw, "kafka.includeEventId", False)
    # Without --spec, the broker may come from the environment (as the test env exports it).
    kafka = raw.get("kafka", {})
    if "bootstrapServers" not in kafka and "bootstrap_servers" not in kafka:
        env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if env:
            _set(raw, "kafka.bootstrapServers", env)
    return CsvIngestionSpec.model_validate(raw)


def cli_transactional_key(spec: CsvIngestionSpec, transactional_id: str | None
                          ) -> CheckpointKey | None:
    """Exactly-once on the command line: the transactional id is the user's (there is no
    resource to derive one from), and keys the checkpoint too."""
    if spec.kafka.delivery is not Delivery.EXACTLY_ONCE:
        if transactional_id:
            raise UsageError("--transactional-id is for --exactly-once")
        return None
    if not transactional_id:
        raise UsageError("--exactly-once needs --transactional-id ID (stable across restarts "
                         "of this ingestion)")
    from ingest_worker.kafka.offsets import CheckpointKey

    return CheckpointKey(transactional_id, f"cli/{transactional_id}")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from ingest_worker.sources import install_log_scrubbing

    setup_logging(args.log_level)
    install_log_scrubbing("ingest_worker")  # cloud credentials come from the environment
    try:
        spec = spec_from_args(args)
        txn_key = cli_transactional_key(spec, args.transactional_id)
    except (ValidationError, UsageError, OSError) as e:
        print(f"csv-ingest: invalid job: {e}", file=sys.stderr)
        return EXIT_CONFIG
    store: CheckpointStore = (
        FileCheckpointStore(args.checkpoint) if args.checkpoint else MemoryCheckpointStore()
    )
    metrics = None
    if args.metrics_port:
        from ingest_worker.metrics import Metrics

        metrics = Metrics()
        metrics.serve(args.metrics_port)
    stop = threading.Event()
    install_signal_handlers(stop)
    tune_gc()
    with contextlib.ExitStack() as stack:
        errors_log = stack.enter_context(args.errors_log.open("a")) if args.errors_log else None
        result: IngestResult = run_ingestion(
            spec, store, metrics=metrics, errors_log=errors_log, stop=stop, txn_key=txn_key,
        )
    print(result.message if result.completed else f"csv-ingest: FAILED: {result.message}",
          file=out if result.completed else sys.stderr)
    if not result.completed:
        c = result.counters
        print(f"rows read {c.rows_read}, published {c.rows_published}, failed "
              f"{c.rows_failed} (as of the last checkpoint)", file=sys.stderr)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args, sys.stdout)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
