"""One index of a run with work units: its share of the plan, one unit after the other.

The pod of index ``i`` (``JOB_COMPLETION_INDEX``) runs the units :func:`~.plan.assign.assign`
gives it, each from its own checkpoint in ``status.units``, and skips those already completed.
A unit's own failure (its file missing or changed, too many bad rows in it, a header that does
not match) fails that unit only: the index goes on with its other units and ends with 0, so
the Job is not failed by it, and the operator ends the run Failed, naming the file, once every
index has finished. The run's own failures stop the pod: Kafka unavailable past the retry
budget or refusing us (every unit would fail the same way: the Job fails), a crash or a
SIGTERM (the Job retries the index, which resumes from the checkpoints).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest_worker.api.spec import CsvIngestionSpec, OnSourceChange
from ingest_worker.api.units import (
    UnitCheckpoint,
    UnitFailed,
    UnitsStatus,
    UnitStarted,
)
from ingest_worker.checkpoint.units import UnitStore, UnitsWriter, to_unit
from ingest_worker.exitcodes import EXIT_FENCED, EXIT_INTERRUPTED, EXIT_KAFKA, EXIT_OK
from ingest_worker.kafka.producer import ProducerPool, producer_config
from ingest_worker.plan.assign import assign
from ingest_worker.plan.units import Plan, WorkUnit
from ingest_worker.run import IngestResult, Span, file_layout, run_ingestion
from ingest_worker.schema.settle import (
    CachingLedger,
    MemoryLedger,
    SchemaLedger,
    needs_registry,
    settle_source,
)
from ingest_worker.sources import CsvSource, SourceError

if TYPE_CHECKING:
    from ingest_worker.kafka.offsets import CheckpointKey
    from ingest_worker.metrics import Metrics

log = logging.getLogger("ingest_worker.units")


@dataclass(frozen=True)
class IndexResult:
    """How an index ended: ``exit_code`` is a run's (EXIT_OK when its units all ended, failed
    ones included)."""

    exit_code: int
    message: str
    completed: int = 0
    failed: int = 0


def _unit_spec(spec: CsvIngestionSpec, unit: WorkUnit) -> CsvIngestionSpec:
    # The worker reads spec.source.url: the unit's file (validators do not run on a copy).
    return spec.model_copy(update={"source": spec.source.model_copy(update={"url": unit.url})})


def _start(
    spec: CsvIngestionSpec, unit: WorkUnit, units: UnitsStatus, source: CsvSource
) -> UnitCheckpoint | str:
    """Where the unit starts (its checkpoint, or its first byte), or why it cannot run."""
    active = {u.id: u for u in units.active}
    cp = active.get(unit.id)
    expected = cp.source_version if cp is not None and cp.source_version else unit.version
    if source.version == expected:
        if cp is not None:
            return cp
        return UnitCheckpoint.at_start(unit.id, unit.start, unit.url, source.version,
                                       unit.length)
    changed = f"{unit.url} changed since it was planned (version {expected} -> {source.version})"
    if unit.start > 0 or unit.end is not None:  # one of several ranges of its file
        return (f"{changed}: its shards were cut for the planned version; raise spec.restart "
                "to plan the run again")
    # A fixed file: the retry of a failed unit takes the new version, as onChange: Restart
    # takes it for any unit. Its rows are ingested again from the start.
    if unit.id in units.retried_ids() or spec.source.on_change is OnSourceChange.RESTART:
        log.warning("%s; ingesting it from the beginning", changed)
        return UnitCheckpoint.at_start(unit.id, 0, unit.url, source.version, source.size)
    return f"{changed}; edit the spec to retry the file (its new version), or set " \
           "source.onChange=Restart"


def run_unit(
    spec: CsvIngestionSpec, unit: WorkUnit, writer: UnitsWriter,
    stop: threading.Event, metrics: Metrics | None = None,
    producers: ProducerPool | None = None, check_topics: bool = True,
    txn_key: CheckpointKey | None = None, schemas: SchemaLedger | None = None,
) -> IngestResult | str:
    """Runs one unit; a string is the unit's failure before any row was read."""
    assert writer.units is not None
    try:
        source = CsvSource(unit.url, spec.source.compression,
                           endpoint_url=spec.source.endpoint_url)
    except SourceError as e:
        return str(e)
    start = _start(spec, unit, writer.units, source)
    if isinstance(start, str):
        return start
    writer.add(UnitStarted(start))
    store = UnitStore(writer, unit.id, unit.url, start)
    if start.byte_offset <= unit.start:
        store.start = None  # its first byte: the run skips the header itself
    log.info("Unit %d: %s [%d, %s)%s", unit.id, unit.url, unit.start,
             "end" if unit.end is None else unit.end,
             f" from byte {start.byte_offset}" if store.start is not None else "")
    line = unit.line if unit.line is not None else 1
    return run_ingestion(_unit_spec(spec, unit), store, stop=stop, source=source,
                         span=Span(unit.start, unit.end, line), metrics=metrics,
                         producers=producers, check_topics=check_topics, txn_key=txn_key,
                         schemas=schemas)


def settle_plan(spec: CsvIngestionSpec, plan: Plan, schemas: SchemaLedger) -> None:
    """Settles the ingestion's schema on the plan's first file, before the plan is recorded:
    the pods that wait for the plan then all find it in status."""
    if not plan.units or not needs_registry(spec):
        return
    unit = plan.units[0]
    source = CsvSource(unit.url, spec.source.compression, endpoint_url=spec.source.endpoint_url)
    unit_spec = _unit_spec(spec, unit)
    header, layout = file_layout(unit_spec, source)
    settle_source(unit_spec, layout, source, header, schemas)


def run_index(
    spec: CsvIngestionSpec, plan: Plan, index: int, indexes: int, writer: UnitsWriter,
    stop: threading.Event, metrics: Metrics | None = None, txn_key: CheckpointKey | None = None,
    schemas: SchemaLedger | None = None,
) -> IndexResult:
    """Runs the units of ``index`` (of ``indexes``) that are not done. ``txn_key``: the
    ingestion's exactly-once key, from which each unit's is derived; ``schemas``: where the
    ingestion's schema is recorded (settled before the plan: every unit reads it)."""
    mine = assign(plan.units, indexes)[index] if index < indexes else []
    units = writer.read()
    if units is None or units.plan != plan.digest:
        raise RuntimeError("status.units does not belong to the recorded plan")
    kafka = spec.kafka
    producers = ProducerPool(producer_config(kafka.bootstrap_servers, kafka.retry_budget_seconds,
                                             kafka.producer_properties),
                             kafka.topic, float(kafka.retry_budget_seconds))
    try:
        ledger = CachingLedger(schemas or MemoryLedger())
        return _run_batch(spec, plan, mine, writer, stop, metrics, producers, index, txn_key,
                          ledger)
    finally:
        producers.close()


def _run_batch(
    spec: CsvIngestionSpec, plan: Plan, mine: list[int], writer: UnitsWriter,
    stop: threading.Event, metrics: Metrics | None, producers: ProducerPool, index: int,
    txn_key: CheckpointKey | None, schemas: SchemaLedger,
) -> IndexResult:
    completed = failed = 0
    checked = False  # the topics, by this pod's first unit that completed
    for uid in mine:
        units = writer.units
        assert units is not None
        if uid in units.completed_ids() or uid in units.all_failed_ids():
            continue
        unit = plan.units[uid]
        result = run_unit(spec, unit, writer, stop, metrics, producers, not checked,
                          txn_key.for_unit(plan.digest, uid) if txn_key else None, schemas)
        checked = checked or (isinstance(result, IngestResult) and result.completed)
        if isinstance(result, IngestResult) and result.completed:
            completed += 1
            continue
        if isinstance(result, IngestResult):
            if result.exit_code in (EXIT_INTERRUPTED, EXIT_KAFKA, EXIT_FENCED):
                writer.flush()
                return IndexResult(result.exit_code, result.message, completed, failed)
            reason, last = result.message, result.checkpoint
        else:
            reason, last = result, None
        active = writer.units.active if writer.units else []
        previous = next((u for u in active if u.id == uid), None)
        checkpoint = (to_unit(uid, last) if last is not None else previous
                      or UnitCheckpoint.at_start(uid, unit.start, unit.url, unit.version,
                                                 unit.length))
        log.error("Unit %d failed: %s: %s", uid, unit.url, reason)
        writer.add(UnitFailed(checkpoint, reason))
        failed += 1
    writer.flush()
    return IndexResult(EXIT_OK, f"index {index}: {completed} units completed, {failed} failed",
                       completed, failed)

