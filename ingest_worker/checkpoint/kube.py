"""A :class:`~ingest_worker.checkpoint.CheckpointStore` over the CsvIngestion status subresource.

The worker writes its checkpoint and counters into its own resource's status, with the rights of
the Role the operator made for it (get and patch only that resource's status). Two rules keep the
status true while several writers exist (the operator, a retried pod, a stale pod of an old run):

* every write is a read-compare-write with a ``resourceVersion`` precondition, retried on 409
  (:func:`ingest_worker.api.client.update_status`, the operator's too);
* a checkpoint never moves backwards, and a worker of an older run (``status.run`` above its own)
  writes nothing: it is told to stop (:class:`StaleRun`).

Writes are throttled to one per ``min_interval`` seconds; ``final`` always writes. Error messages
are scrubbed of credentials before they reach the status (and from there events). Each write
while the run goes also carries the rate and the ETA (:mod:`.rate`), measured between the
written checkpoints; ``final`` removes them and records how the attempt ended in
``status.history``.

The API server may be unreachable for a while (an upgrade, a restart). A checkpoint that cannot
be written then is not fatal: the worker goes on and a later save carries it, until the rows
since the last written checkpoint reach ``max_lag_rows``; from there ``save`` blocks, retrying,
which stalls the pipeline (backpressure). So an outage never crashes the worker, and a crash
during one replays at most ``max_lag_rows`` rows. Past ``outage_budget`` seconds it gives up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ingest_worker.api.client import api_client, get_ingestion, update_status
from ingest_worker.api.status import (
    AttemptRecord,
    CheckpointStatus,
    CsvIngestionStatus,
    status_patch,
    with_attempt,
)
from ingest_worker.checkpoint.model import Checkpoint, Counters, Outcome, now_rfc3339
from ingest_worker.checkpoint.rate import Rate, Sample, eta_seconds, format_eta, next_rate
from ingest_worker.sources.scrub import scrub

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """An error that waiting can cure: no connection, or the server busy or restarting."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (HTTPError, ConnectionError, TimeoutError))


def retrying(
    what: str, call: Callable[[], Any], budget: float, clock: Callable[[], float] = time.monotonic
) -> Any:
    """``call()``, retried with backoff through transient API errors for ``budget`` seconds."""
    deadline = clock() + budget
    delay = 0.2
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or clock() + delay > deadline:
                raise
            log.warning(
                "%s: Kubernetes API unavailable (%s); retrying in %.1fs",
                what,
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class StaleRun(Exception):
    """A newer run of the ingestion exists: this worker must stop and write nothing."""


class AttemptBehind(Exception):
    """Another attempt of the same run stored a checkpoint ahead of this worker's.

    Two workers of one run only coexist when a pod the Job controller gave up on still runs
    (a partitioned node). Both would publish the rest of the file; the one behind yields, so
    the replay stays within about one checkpoint interval.
    """


class IngestionGone(Exception):
    """The CsvIngestion was deleted: its Job goes with it."""


def progress(bytes_read: int, bytes_total: int | None) -> str | None:
    """``"42%"`` (rounded down, so 100% means done), or None when the size is unknown."""
    if not bytes_total:
        return None
    return f"{min(100, bytes_read * 100 // bytes_total)}%"


def checkpoint_status(cp: Checkpoint) -> dict[str, Any]:
    """The status patch a checkpoint writes."""
    c = cp.counters
    return status_patch(
        checkpoint=CheckpointStatus(
            byte_offset=cp.byte_offset, row=cp.row, line=cp.line, time=cp.time
        ),
        rows_read=c.rows_read,
        rows_published=c.rows_published,
        rows_failed=c.rows_failed,
        bytes_read=c.bytes_read,
        bytes_total=c.bytes_total,
        progress=progress(c.bytes_read, c.bytes_total),
        source_version=cp.source_version,
    )


def rate_patch(rate: Rate | None, cp: Checkpoint) -> dict[str, Any]:
    """``rowsPerSecond`` and ``eta`` at ``cp``; None (no rate yet, or the run ended) removes
    them, as does an unknown size the ETA."""
    eta = eta_seconds(rate, cp.counters.bytes_read, cp.counters.bytes_total)
    return status_patch(
        rows_per_second=None if rate is None else round(rate.rows_per_second, 1),
        eta=None if eta is None else format_eta(eta),
    )


def attempt_record(attempt: int, run: int, outcome: Outcome) -> AttemptRecord:
    """The history record of an attempt that ended so, its message scrubbed of credentials."""
    return AttemptRecord(
        attempt=attempt,
        run=run,
        time=now_rfc3339(),
        outcome="Completed" if outcome.completed else "Failed",
        message=scrub(outcome.message),
    )


def error_patch(message: str) -> dict[str, Any]:
    """The status patch of a fatal error: scrubbed of credentials, and short enough for etcd."""
    return status_patch(last_error=scrub(message)[:4000])


def _status(raw: dict[str, Any]) -> CsvIngestionStatus:
    return CsvIngestionStatus.model_validate(raw)


def checkpoint_from_status(status: dict[str, Any], default_url: str) -> Checkpoint | None:
    """The checkpoint a new pod resumes from, or None to start at the beginning."""
    st = _status(status)
    cp = st.checkpoint
    if cp is None:
        return None
    return Checkpoint(
        byte_offset=cp.byte_offset,
        row=cp.row,
        line=cp.line,
        source_url=st.source_url or default_url,
        source_version=st.source_version,
        counters=Counters(
            rows_read=st.rows_read,
            rows_published=st.rows_published,
            rows_failed=st.rows_failed,
            bytes_read=st.bytes_read,
            bytes_total=st.bytes_total,
        ),
        time=cp.time or now_rfc3339(),
    )


def is_behind(current: dict[str, Any], cp: Checkpoint) -> bool:
    """Whether ``cp`` would move the stored checkpoint backwards (same file)."""
    st = _status(current)
    if st.source_url not in (None, cp.source_url):
        return False  # the operator reset the status for another file
    if st.source_version not in (None, cp.source_version):
        return False  # the object was replaced and the run restarts from zero (onChange: Restart)
    return st.checkpoint is not None and st.checkpoint.byte_offset > cp.byte_offset


class KubeStatusStore:
    """Checkpoints in ``status`` of one CsvIngestion, for the worker of run ``run``."""

    def __init__(
        self,
        namespace: str,
        name: str,
        run: int,
        source_url: str,
        api: client.ApiClient | None = None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_lag_rows: int = 100_000,
        outage_budget: float = 300.0,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.run = run
        self.source_url = source_url
        self.api = api or api_client()
        self.min_interval = min_interval
        self.clock = clock
        self._last_write = float("-inf")
        self.writes = 0
        self.max_lag_rows = max_lag_rows
        self.outage_budget = outage_budget
        self._written_row: int | None = None  # row of the last checkpoint the API accepted
        self.attempt: int | None = None  # this pod's attempt number, once start() counted it
        self._sample: Sample | None = None  # where the last written checkpoint was, and when
        self._rate: Rate | None = None

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        return retrying(what, call, self.outage_budget, self.clock)

    # -- the API ---------------------------------------------------------------------------

    def get(self) -> dict[str, Any]:
        """The CsvIngestion (spec and status) as the API server has it."""
        body = get_ingestion(self.namespace, self.name, self.api)
        if body is None:
            raise IngestionGone(f"{self.namespace}/{self.name} no longer exists")
        return body

    def _check_run(self, status: dict[str, Any]) -> None:
        newer = _status(status).run
        if newer > self.run:
            raise StaleRun(
                f"run {newer} of {self.namespace}/{self.name} superseded run {self.run}"
            )

    def _update(self, compute: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Read-compare-write: ``compute(status)`` returns a merge patch or None (no write)."""

        def decide(body: dict[str, Any]) -> dict[str, Any] | None:
            status = body.get("status") or {}
            self._check_run(status)
            return compute(status)

        body, patch = update_status(self.namespace, self.name, decide, self.api)
        if body is None:
            raise IngestionGone(f"{self.namespace}/{self.name} no longer exists")
        if patch is None:
            return False
        self.writes += 1
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> int:
        """Counts this pod as an attempt; returns the attempt number."""
        attempts: list[int] = []

        def compute(status: dict[str, Any]) -> dict[str, Any]:
            attempts[:] = [_status(status).attempts + 1]
            return status_patch(attempts=attempts[0])

        self._retrying("counting the attempt", lambda: self._update(compute))
        self.attempt = attempts[0]
        return attempts[0]

    def _ended(self, status: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        """The patch of this attempt's end: its record in the history, no rate or ETA."""
        st = _status(status)
        record = attempt_record(self.attempt or max(1, st.attempts), self.run, outcome)
        return {
            **status_patch(history=with_attempt(st.history, record)),
            **status_patch(rows_per_second=None, eta=None),
            **({} if outcome.completed else error_patch(outcome.message)),
        }

    def fail(self, message: str) -> None:
        """Records a fatal error; the operator copies it into status.message."""
        outcome = Outcome(False, message)
        self._retrying(
            "recording the error",
            lambda: self._update(lambda status: self._ended(status, outcome)),
        )

    # -- SchemaLedger ---------------------------------------------------------------------------

    def schema(self) -> dict[str, Any] | None:
        status = self._retrying("reading the schema", self.get).get("status") or {}
        return status.get("schema")

    def record_schema(self, record: dict[str, Any]) -> dict[str, Any]:
        kept: list[dict[str, Any]] = []

        def compute(status: dict[str, Any]) -> dict[str, Any] | None:
            old = status.get("schema")
            if old is not None and old.get("restart") == record.get("restart"):
                kept[:] = [old]
                return None
            kept[:] = [record]
            return status_patch(schema_=record)

        self._retrying("recording the schema", lambda: self._update(compute))
        return kept[0]

    # -- CheckpointStore ----------------------------------------------------------------------

    def load(self) -> Checkpoint | None:
        status = self._retrying("loading the checkpoint", self.get).get("status") or {}
        self._check_run(status)
        return checkpoint_from_status(status, self.source_url)

    def _write(self, cp: Checkpoint, outcome: Outcome | None = None) -> bool:
        """Writes ``cp`` with the rate since the last write, or, with ``outcome``, as the last
        checkpoint of this attempt."""
        sample = Sample(self.clock(), cp.counters.rows_read, cp.counters.bytes_read)
        rate = None if self._sample is None else next_rate(self._rate, self._sample, sample)

        def compute(status: dict[str, Any]) -> dict[str, Any] | None:
            if is_behind(status, cp):
                raise AttemptBehind(
                    f"another attempt of {self.namespace}/{self.name} is ahead: checkpoint at "
                    f"byte {getattr(_status(status).checkpoint, 'byte_offset', None)}, this "
                    f"worker at "
                    f"{cp.byte_offset}; not moving it back"
                )
            if outcome is not None:
                return {**checkpoint_status(cp), **self._ended(status, outcome)}
            return {**checkpoint_status(cp), **rate_patch(rate, cp)}

        written = self._update(compute)
        self._last_write = self.clock()
        self._written_row = cp.row
        self._sample, self._rate = sample, rate
        return written

    def save(self, checkpoint: Checkpoint) -> None:
        if self._written_row is None:
            self._written_row = checkpoint.row  # where this pod resumed from
        lag = checkpoint.row - self._written_row
        # Throttled to spare etcd, but never so far that a crash would replay more than the
        # checkpoint interval (the pipeline saves every half interval).
        if self.clock() - self._last_write < self.min_interval and lag < self.max_lag_rows // 2:
            return  # a later save or final() carries it
        try:
            self._write(checkpoint)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if lag < self.max_lag_rows:
                log.warning(
                    "checkpoint at row %d not saved yet (Kubernetes API unavailable: %s); going on",
                    checkpoint.row,
                    type(exc).__name__,
                )
                return
            # Too far ahead of what a restart would resume from: hold the pipeline until the
            # API answers, so an outage cannot turn into an unbounded replay.
            log.warning("holding at row %d until the checkpoint can be saved", checkpoint.row)
            self._retrying("saving the checkpoint", lambda: self._write(checkpoint))

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self._retrying("saving the final checkpoint", lambda: self._write(checkpoint, outcome))
