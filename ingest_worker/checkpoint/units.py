"""The checkpoints of work units in ``status.units``, written in batches by every pod of a run.

Each pod of the Indexed Job runs its units one after the other and reports their events
(:mod:`ingest_worker.api.units`). :class:`UnitsWriter` folds them into ``status.units`` with
a read-compare-write (a ``resourceVersion`` precondition, retried on 409, as every status
writer does): many events, one write, at most one write per ``min_interval`` per pod however
many units it runs (sooner only when a unit's rows outrun half of ``checkpoint.everyRows``, the
bound a single file's checkpoint keeps too), and a last one when the pod's units are done. A
pod that dies loses at most its last interval of events: its units run again from the
checkpoints before (a small file that had completed, again from its start).
The totals at the top of the status (rowsRead, rowsPublished, ...) are the units' sums, so
``kubectl get`` reads the same columns as for one file.

:class:`UnitStore` is one unit's :class:`~ingest_worker.checkpoint.CheckpointStore`: the
worker's run of a unit saves checkpoints through it exactly as a whole-file run does into
``status.checkpoint``. It never ends a unit as failed: whether a failure is the file's (the
unit fails, the others go on) or the run's (Kafka down: the pod stops) is the runner's call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from ingest_worker.api.client import api_client, update_status
from ingest_worker.api.status import CsvIngestionStatus, status_patch
from ingest_worker.api.units import (
    UnitCheckpoint,
    UnitCheckpointed,
    UnitCompleted,
    UnitEvent,
    UnitsStatus,
    UnitStarted,
    apply,
)
from ingest_worker.checkpoint.kube import IngestionGone, StaleRun, progress, retrying
from ingest_worker.checkpoint.model import Checkpoint, Outcome

log = logging.getLogger(__name__)


def to_unit(unit_id: int, cp: Checkpoint) -> UnitCheckpoint:
    """The unit checkpoint of a worker's checkpoint: the same fields, and the unit's id."""
    return UnitCheckpoint.model_validate({**cp.to_dict(), "id": unit_id})


def from_unit(cp: UnitCheckpoint, url: str) -> Checkpoint:
    return Checkpoint.from_dict({"sourceUrl": url, **cp.to_wire()})


def _merge(old: UnitEvent | None, new: UnitEvent) -> UnitEvent:
    """The one event that has the effect of ``old`` then ``new`` (same unit)."""
    if isinstance(old, UnitStarted) and isinstance(new, UnitCheckpointed):
        # A restart from the beginning must stay one: a checkpoint after it is behind the
        # stored one, which a plain UnitCheckpointed would leave in place.
        return UnitStarted(new.checkpoint)
    return new


class UnitsWriter:
    """Unit events of one pod, written into ``status.units`` of its CsvIngestion."""

    def __init__(
        self,
        namespace: str,
        name: str,
        run: int,
        api: client.ApiClient | None = None,
        min_interval: float = 1.0,
        outage_budget: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_lag_rows: int = 100_000,
    ) -> None:
        self.namespace, self.name, self.run = namespace, name, run
        self.api = api or api_client()
        self.min_interval = min_interval
        self.outage_budget = outage_budget
        self.clock = clock
        self.pending: dict[int, UnitEvent] = {}
        self.units: UnitsStatus | None = None
        """``status.units`` as last read or written."""
        self.writes = 0
        self._last_write = float("-inf")
        self.max_lag_rows = max_lag_rows
        self._written_row: dict[int, int] = {}  # per unit, the row of its last written event

    def _status(self, body: dict[str, Any]) -> CsvIngestionStatus:
        st = CsvIngestionStatus.model_validate(body.get("status") or {})
        if st.run > self.run:
            raise StaleRun(f"run {st.run} of {self.namespace}/{self.name} superseded run "
                           f"{self.run}")
        return st

    def read(self) -> UnitsStatus | None:
        """``status.units`` as the API server has it now."""
        from ingest_worker.api.client import get_ingestion

        body = retrying("reading the units", lambda: get_ingestion(
            self.namespace, self.name, self.api), self.outage_budget, self.clock)
        if body is None:
            raise IngestionGone(f"{self.namespace}/{self.name} no longer exists")
        self.units = self._status(body).units
        return self.units

    def initialise(self, fresh: UnitsStatus) -> UnitsStatus:
        """Writes ``fresh`` as ``status.units`` unless units of the same plan are there; returns
        the units in force."""

        def compute(body: dict[str, Any]) -> dict[str, Any] | None:
            units = self._status(body).units
            if units is not None and units.plan == fresh.plan:
                self.units = units
                return None
            self.units = fresh
            return status_patch(units=fresh, **_totals(fresh))

        self._update(compute)
        assert self.units is not None
        return self.units

    def add(self, event: UnitEvent) -> None:
        """Queues ``event``; writes the queue once ``min_interval`` passed since the last
        write, or sooner when a unit is half a checkpoint interval (``max_lag_rows``) ahead of
        what is written: a crash then replays at most one interval, as for a single file."""
        cp = event.checkpoint
        self.pending[cp.id] = _merge(self.pending.get(cp.id), event)
        lag = cp.row - self._written_row.setdefault(cp.id, cp.row)
        if (self.clock() - self._last_write >= self.min_interval
                or lag >= self.max_lag_rows // 2):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        events = list(self.pending.values())

        def compute(body: dict[str, Any]) -> dict[str, Any] | None:
            units = self._status(body).units
            if units is None:
                raise StaleRun(f"{self.namespace}/{self.name} has no units: the run was reset")
            self.units = apply(units, events)
            return status_patch(units=self.units, **_totals(self.units))

        self._update(compute)
        for event in events:
            self._written_row[event.checkpoint.id] = event.checkpoint.row
        self.pending.clear()
        self._last_write = self.clock()

    def _update(self, compute: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        def call() -> None:
            body, patch = update_status(self.namespace, self.name, compute, self.api)
            if body is None:
                raise IngestionGone(f"{self.namespace}/{self.name} no longer exists")
            if patch is not None:
                self.writes += 1

        retrying("writing the units' checkpoints", call, self.outage_budget, self.clock)


def _totals(units: UnitsStatus) -> dict[str, Any]:
    """The top of the status: the units' sums."""
    c = units.counters
    return {"rows_read": c.rows_read, "rows_published": c.rows_published,
            "rows_failed": c.rows_failed, "bytes_read": c.bytes_read,
            "bytes_total": c.bytes_total, "progress": progress(c.bytes_read, c.bytes_total)}


class UnitStore:
    """One unit's checkpoints, through the pod's :class:`UnitsWriter`; the runner reports the
    unit's start (``UnitStarted``) before the run."""

    def __init__(self, writer: UnitsWriter, unit_id: int, url: str,
                 start: UnitCheckpoint | None) -> None:
        self.writer, self.unit_id, self.url, self.start = writer, unit_id, url, start
        self.last: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        return None if self.start is None else from_unit(self.start, self.url)

    def save(self, checkpoint: Checkpoint) -> None:
        self.last = checkpoint
        self.writer.add(UnitCheckpointed(to_unit(self.unit_id, checkpoint)))

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self.last = checkpoint
        cp = to_unit(self.unit_id, checkpoint)
        if outcome.completed:
            self.writer.add(UnitCompleted(cp))
        else:  # the runner says whether the unit failed
            self.writer.add(UnitCheckpointed(cp))
