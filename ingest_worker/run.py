"""One ingestion, start to end: reader → bounded window → worker threads → Kafka; checkpoints.

A reader thread reads the file in blocks and cuts them into chunks of whole records (the
compiled core finds the boundaries), numbers them, and hands each to the least busy of P
workers (:mod:`ingest_worker.workers`). Workers report each chunk once Kafka acknowledged all of
it; this thread advances the contiguous low-watermark over those reports and saves it as the
checkpoint, logs bad rows in file order, and applies the error budget.

At most ``window`` chunks are between the reader and the watermark, which bounds memory (and
the rows a crash can make us send twice) whatever the file size or the broker's speed.
"""

from __future__ import annotations

import gc
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import IO, TYPE_CHECKING, TextIO, cast

import orjson

from ingest_worker.api.spec import CsvIngestionSpec, Delivery, Kafka, OnSourceChange
from ingest_worker.badrows import BadRowLog, BadRows, pod_budget
from ingest_worker.checkpoint import (
    Checkpoint,
    CheckpointStore,
    ChunkDone,
    Counters,
    Outcome,
    Watermark,
)
from ingest_worker.csv.chunks import Chunk, SourceReader, SourceReadError, cut_chunks
from ingest_worker.csv.dialect import (
    ConfigError,
    Header,
    Layout,
    check_format,
    normalize_encoding,
    read_header,
    resolve_layout,
)
from ingest_worker.exitcodes import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_FENCED,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_OK,
    EXIT_TOO_MANY_ERRORS,
)
from ingest_worker.kafka import TopicError
from ingest_worker.kafka.producer import (
    KafkaUnavailable,
    ProducerFenced,
    ProducerPool,
    Refusal,
    producer_config,
)
from ingest_worker.logs import Progress, fmt_duration
from ingest_worker.policy import over_budget
from ingest_worker.schema.settle import MemoryLedger, SchemaLedger, settle_source
from ingest_worker.sources import CsvSource, SourceError
from ingest_worker.workers import ChunkResult, Worker, WorkerConfig, WorkerFailure

if TYPE_CHECKING:  # imported by whoever serves metrics: prometheus_client costs 30 ms of a start
    from ingest_worker.exactly_once import Transactions
    from ingest_worker.kafka.offsets import CheckpointKey
    from ingest_worker.metrics import Metrics

log = logging.getLogger("ingest_worker")

HEADER_READ_BYTES = 256 * 1024
"""The first GET of a remote file, for its header: a shard of a huge file reads its own range
after it, so a full 8 MiB buffer here would be read twice."""


@dataclass(frozen=True)
class Tuning:
    """Knobs that do not belong in the resource spec (sizes of buffers, not behaviour)."""

    read_block_bytes: int = 1024 * 1024
    max_chunk_bytes: int = 2 * 1024 * 1024
    max_chunk_rows: int | None = None
    """Default: small enough that a crash re-sends no more than the checkpoint interval."""
    max_record_bytes: int = 64 * 1024 * 1024
    """A record longer than this (usually an unterminated quote) fails the run."""
    window_per_worker: int = 2
    stop_grace_s: float = 30.0


@dataclass(frozen=True)
class IngestResult:
    """How a run ended."""

    completed: bool
    """Every row acknowledged by Kafka or accounted for as a bad row."""
    exit_code: int
    message: str
    """One-line summary, or the fatal error."""
    checkpoint: Checkpoint | None
    """The last checkpoint saved (None if the run failed before it started)."""
    duration_s: float

    @property
    def counters(self) -> Counters:
        return self.checkpoint.counters if self.checkpoint else Counters()


@dataclass(frozen=True)
class Span:
    """The byte range of a file one work unit ingests: the records that start in
    ``[start, end)``. ``start`` 0 is the file's start (the header is skipped as usual); any
    other start is a record boundary the plan found, at physical line ``line``."""

    start: int = 0
    end: int | None = None
    """Exclusive; None: the end of the file."""
    line: int = 1


class _Fatal(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FATAL, rewind: bool = False,
                 refusals: tuple[Refusal, ...] = ()) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.rewind = rewind
        self.refusals = refusals


class _Rewind(Exception):
    """Exactly-once: the pass's transaction failed; the run resumes from the last commit."""

    def __init__(self, message: str, refusals: tuple[Refusal, ...],
                 checkpoint: Checkpoint | None) -> None:
        super().__init__(message)
        self.refusals = refusals
        self.checkpoint = checkpoint


def _ensure_topics(kafka: Kafka, timeout_s: float) -> None:
    from ingest_worker.kafka.topics import ensure_topics  # the admin client: in this thread

    ensure_topics(kafka, timeout_s)


def _no_check(kafka: Kafka, timeout_s: float) -> None:
    """The topics were checked by an earlier run of this process (a pod's earlier unit)."""


class _Check:
    """A check run in a thread; ``wait`` returns once it passed, or raises what it raised."""

    def __init__(self, check: Callable[..., None], *args: object) -> None:
        self.error: BaseException | None = None

        def main() -> None:
            try:
                check(*args)
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=main, name="csv-check", daemon=True)
        self.thread.start()

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Reader:
    """The reader thread: cuts the source into chunks and dispatches them, at most ``window``
    ahead of the watermark (the slots are given back as the watermark passes chunks)."""

    def __init__(self, source: CsvSource, run: _Run, start: Checkpoint, end: int | None,
                 max_rows: int, window: int) -> None:
        self.source, self.run, self.start, self.max_rows = source, run, start, max_rows
        self.end = source.size if end is None else end
        self.slots = threading.Semaphore(window)
        self.stop = threading.Event()
        self.chunks: int | None = None
        """How many chunks the file made, once all are dispatched."""
        self.error: BaseException | None = None
        self.dispatched: dict[int, Chunk] = {}
        """Dispatched chunks by number, until finished."""
        self.rows_dispatched = start.row
        """The row after the last dispatched chunk."""
        self.thread = threading.Thread(target=self._main, name="csv-reader", daemon=True)

    def _main(self) -> None:
        run, source, tuning = self.run, self.source, self.run.tuning
        try:
            with source.open(self.start.byte_offset) as raw:
                limit = None if self.end is None else self.end - self.start.byte_offset
                stream = cast(IO[bytes], SourceReader(raw, source.url, not source.seekable,
                                                      limit))
                n = 0
                for chunk in cut_chunks(stream, run.layout, self.start, max_rows=self.max_rows,
                                        max_bytes=tuning.max_chunk_bytes,
                                        read_bytes=tuning.read_block_bytes,
                                        max_record_bytes=tuning.max_record_bytes):
                    while not self.slots.acquire(timeout=0.2):
                        if self.stop.is_set():
                            return
                    if self.stop.is_set():
                        return
                    self.dispatched[chunk.seq] = chunk  # before the send: the result may come fast
                    run.dispatch(chunk)
                    self.rows_dispatched = chunk.end_row
                    if run.metrics is not None:
                        run.metrics.lines.labels("read").inc(chunk.rows)
                    n += 1
                self.chunks = n
        except BaseException as e:
            self.error = e


@dataclass
class _Run:
    spec: CsvIngestionSpec
    store: CheckpointStore
    metrics: Metrics | None
    """None: no metrics (the command line without --metrics-port: no Prometheus client to
    import, a shorter start)."""
    tuning: Tuning
    errors_log: TextIO | None
    reporter: Callable[[Checkpoint], None] | None
    stop_requested: threading.Event
    source: CsvSource | None = None
    """The file, already probed (a unit's runner probes it first); None: probe spec's URL."""
    span: Span = field(default_factory=Span)
    producers: ProducerPool | None = None
    check_topics: bool = True
    txn: Transactions | None = None
    """Exactly-once: the unit's transactional session (None: at-least-once)."""
    schemas: SchemaLedger = field(default_factory=MemoryLedger)
    """Where the ingestion's schema is recorded (status.schema), settled by its first run."""
    started: float = field(default_factory=time.monotonic)
    workers: list[Worker] = field(default_factory=list)
    outstanding: list[int] = field(default_factory=list)
    results: queue.Queue[ChunkResult | WorkerFailure] = field(default_factory=queue.Queue)
    read: int = 0
    failed: int = 0
    bad_log: BadRowLog = field(default_factory=lambda: BadRowLog(log, pod_budget()))
    """The first bad rows of the pod one by one, then counts (see ingest_worker.badrows)."""

    def run(self) -> IngestResult:
        try:
            return self._run()
        finally:
            # Joined, not left as daemons: a thread still inside the compiled core when the
            # interpreter exits aborts the process (python/cpython#87135).
            for w in self.workers:
                w.stop()
            for w in self.workers:
                w.join(timeout=10)

    def _run(self) -> IngestResult:
        spec = self.spec
        check_format(spec.format)
        normalize_encoding(spec.format.encoding)  # an unknown encoding fails before the probe
        source = self.source or CsvSource(
            spec.source.url, spec.source.compression, endpoint_url=spec.source.endpoint_url
        )
        if spec.source.expected_version and source.version != spec.source.expected_version:
            raise SourceError(
                f"source version is {source.version}, expected {spec.source.expected_version}"
            )
        if self.txn is not None:
            # Before the checkpoint is read: every older producer of the unit is fenced, and
            # its open transaction completed, so the last commit is the last word.
            self.txn.open(self.check_topics)
        cp = self.store.load()
        if cp is not None and cp.source_version != source.version:
            if spec.source.on_change is OnSourceChange.FAIL:
                raise SourceError(
                    f"source changed since the checkpoint: {source.url} (version "
                    f"{cp.source_version} -> {source.version}); set source.onChange=Restart to "
                    "start over"
                )
            log.warning("Source changed since the checkpoint, starting over", extra={
                "old_version": cp.source_version, "new_version": source.version})
            cp = None
        if cp is not None and cp.done:
            msg = self._summary(cp, "already complete")
            self.store.final(cp, Outcome(True, msg))
            return IngestResult(True, EXIT_OK, msg, cp, 0.0)
        # Before any row is sent: a missing topic fails by name, not as a broker outage. The
        # check waits on the broker (its first answer takes ~50 ms): meanwhile the header is
        # read and the workers connect.
        topics = _Check(_ensure_topics if self.check_topics else _no_check, spec.kafka,
                        spec.kafka.retry_budget_seconds)
        header, layout = file_layout(spec, source)
        # Before any row is sent: a schema the registry refuses fails the run here.
        self.layout = settle_source(spec, layout, source, header, self.schemas).apply(layout)
        span = self.span
        # A shard's counters count its own bytes: the unit's share of the file.
        first = span.start or header.data_offset
        base = span.start
        end = source.size if span.end is None else span.end
        total = None if end is None else end - base
        start = Checkpoint(
            byte_offset=first,
            row=0,
            line=span.line if span.start else header.data_line,
            source_url=source.url,
            source_version=source.version,
            counters=Counters(bytes_read=first - base, bytes_total=total),
        )
        if cp is not None and cp.byte_offset > start.byte_offset:
            # bytes_read is by definition the offset (older stores may not have kept it).
            counters = replace(cp.counters, bytes_total=total, bytes_read=cp.byte_offset - base)
            start = replace(cp, counters=counters)
            log.info("Resuming from checkpoint", extra={
                "byte_offset": cp.byte_offset, "row": cp.row, "line": cp.line})
        if self.metrics is not None:
            self.metrics.bytes_total.set(source.size if source.size is not None else -1)
            self.metrics.offset.set(start.byte_offset)
        log.info(f"Started processing file {source.url}", extra={
            "source": source.url, "version": source.version, "byte_offset": start.byte_offset,
            "columns": list(self.layout.columns)})
        return self._pump(source, start, topics)

    def _summary(self, cp: Checkpoint, what: str) -> str:
        c = cp.counters
        return (
            f"{what}: {self.spec.source.url}: rows read {c.rows_read}, published "
            f"{c.rows_published}, failed {c.rows_failed}, duration "
            f"{fmt_duration(time.monotonic() - self.started)}"
        )

    def _start_workers(self, start: Checkpoint) -> None:
        spec = self.spec
        cfg = WorkerConfig(
            layout=self.layout,
            topic=spec.kafka.topic,
            dead_letter_topic=spec.kafka.dead_letter_topic,
            producer_config=producer_config(spec.kafka.bootstrap_servers,
                                            spec.kafka.retry_budget_seconds,
                                            spec.kafka.producer_properties),
            retry_budget_s=float(spec.kafka.retry_budget_seconds),
            producers=self.producers,
            every_bad_row=self.errors_log is not None,
        )
        n = spec.worker.parallelism
        if self.txn is not None:
            from ingest_worker.exactly_once import TxnSender

            assert self.txn.producer is not None
            self.workers = [TxnSender(cfg, self.results, self.txn, self.txn.producer, start, n,
                                      self.stop_requested)]
        else:
            self.workers = [Worker(i, cfg, self.results) for i in range(n)]
        self.outstanding = [0] * len(self.workers)

    def dispatch(self, chunk: Chunk) -> None:
        """To the least busy worker; blocks while it is busy, which is the backpressure."""
        i = min(range(len(self.workers)), key=self.outstanding.__getitem__)
        self.outstanding[i] += 1
        w = self.workers[i]
        while True:
            if not w.is_alive():
                raise _Fatal(f"{w.name} stopped")
            try:
                w.inbox.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def _pump(self, source: CsvSource, start: Checkpoint, topics: _Check) -> IngestResult:
        spec, tuning = self.spec, self.tuning
        self._start_workers(start)
        topics.wait()
        if self.txn is not None:
            from ingest_worker.exactly_once import TXN_CHUNKS, WINDOW_TRANSACTIONS

            # Transactions' chunks: the next ones are read and encoded while one commits.
            window = WINDOW_TRANSACTIONS * TXN_CHUNKS
            max_rows = tuning.max_chunk_rows or max(1000, spec.checkpoint.every_rows // TXN_CHUNKS)
        else:
            window = max(2, tuning.window_per_worker * len(self.workers))
            # A crash re-sends at most the unsaved rows below the watermark (every_rows / 2, see
            # save_rows, and the chunk that crosses it) plus the chunks in the window: size
            # chunks so that both fit in every_rows and a chunk.
            max_rows = tuning.max_chunk_rows or max(1000,
                                                    spec.checkpoint.every_rows // (2 * window))
        reader = _Reader(source, self, start, self.span.end, max_rows, window)
        reader.thread.start()
        wm = Watermark(start)
        saved = start
        last_save = time.monotonic()
        progress = Progress(source.size)
        rows0, bytes0 = start.counters.rows_read, start.byte_offset
        bytes_counted = start.byte_offset
        fatal: _Fatal | None = None
        stopping_since: float | None = None
        save_rows = max(1, spec.checkpoint.every_rows // 2)
        bad_by_seq: dict[int, BadRows] = {}
        told_end = False
        try:
            while True:
                if reader.error is not None:
                    raise self._reader_failure(reader.error)
                if reader.chunks is not None and wm.next_seq >= reader.chunks:
                    break
                if reader.chunks is not None and self.txn is not None and not told_end:
                    # The sender reports chunks once committed: it commits the last ones as
                    # soon as it knows no more come.
                    self.workers[0].inbox.put(None)
                    told_end = True
                if self.stop_requested.is_set():
                    if stopping_since is None:
                        stopping_since = time.monotonic()
                        reader.stop.set()
                        log.warning("Stop requested: finishing the chunks in flight")
                    # Wait for what was handed out (bounded by a grace period), then stop.
                    if (not reader.dispatched and not reader.thread.is_alive()) or \
                            time.monotonic() - stopping_since > tuning.stop_grace_s:
                        raise _Fatal("interrupted; checkpoint saved", EXIT_INTERRUPTED)
                for msg in self._results(0.2):
                    if isinstance(msg, WorkerFailure):
                        raise _Fatal(msg.message, msg.exit_code, msg.rewind, msg.refusals)
                    self._account(msg)
                    if msg.bad:
                        bad_by_seq[msg.seq] = msg.bad
                    chunk = reader.dispatched.pop(msg.seq)
                    before = wm.next_seq
                    wm.finish(ChunkDone(msg.seq, chunk.end_offset, chunk.end_row,
                                        chunk.end_line, msg.rows_read, msg.rows_published,
                                        len(msg.bad), len(chunk.data)))
                    for seq in range(before, wm.next_seq):
                        reader.slots.release()
                        self._report_bad(bad_by_seq.pop(seq, None))
                    why = over_budget(spec.errors, self.failed, self.read)
                    if why is not None:
                        raise _Fatal(why, EXIT_TOO_MANY_ERRORS)
                self.bad_log.tick()
                now = time.monotonic()
                if wm.checkpoint.byte_offset > bytes_counted:
                    if self.metrics is not None:
                        self.metrics.bytes_read.inc(wm.checkpoint.byte_offset - bytes_counted)
                    bytes_counted = wm.checkpoint.byte_offset
                if wm.checkpoint.row - saved.row >= save_rows or (
                    now - last_save >= spec.checkpoint.every_seconds
                    and wm.checkpoint.byte_offset > saved.byte_offset
                ):
                    saved, last_save = self._save(wm.checkpoint), now
                c = wm.checkpoint
                progress.update(c.counters.rows_read - rows0, c.byte_offset - bytes0)
                if self.metrics is not None:
                    self.metrics.checkpoint_lag.set(reader.rows_dispatched - saved.row)
        except _Fatal as e:
            fatal = e
        except KeyboardInterrupt:
            fatal = _Fatal("interrupted; checkpoint saved", EXIT_INTERRUPTED)
        finally:
            reader.stop.set()
            self._close_workers(graceful=fatal is None)
            reader.thread.join(timeout=5)
            progress.update(wm.checkpoint.counters.rows_read - rows0,
                            wm.checkpoint.byte_offset - bytes0, force=True)
            progress.close()
            self.bad_log.close()
        cp = wm.checkpoint
        duration = time.monotonic() - self.started
        if fatal is not None and fatal.rewind:
            raise _Rewind(fatal.args[0], fatal.refusals, saved)
        if fatal is not None and fatal.exit_code == EXIT_FENCED:
            # Another attempt owns the unit: status is its to write.
            log.warning(fatal.args[0])
            return IngestResult(False, EXIT_FENCED, fatal.args[0], saved, duration)
        if fatal is not None:
            if cp.byte_offset > saved.byte_offset:
                saved = self._save(cp)
            log.error(fatal.args[0], extra={"byte_offset": saved.byte_offset, "row": saved.row})
            self.store.final(saved, Outcome(False, fatal.args[0]))
            return IngestResult(False, fatal.exit_code, fatal.args[0], saved, duration)
        cp = replace(cp, done=True)
        if self.metrics is not None:
            self.metrics.offset.set(cp.byte_offset)
            self.metrics.duration.observe(duration)
            self.metrics.checkpoint_lag.set(0)  # the last checkpoint covers every row
        summary = self._summary(cp, "completed")
        log.info(
            f"Finished file {source.url} (Duration: {fmt_duration(duration)}, "
            f"Rows: {cp.counters.rows_read})",
            extra={"rows_published": cp.counters.rows_published,
                   "rows_failed": cp.counters.rows_failed, "duration_s": round(duration, 3)},
        )
        self.store.final(cp, Outcome(True, summary))
        return IngestResult(True, EXIT_OK, summary, cp, duration)

    def _reader_failure(self, err: BaseException) -> _Fatal:
        if isinstance(err, _Fatal):
            return err
        if isinstance(err, SourceReadError):
            return _Fatal(str(err))
        return _Fatal(f"reading the source failed: {err!r}")

    def _results(self, timeout: float) -> list[ChunkResult | WorkerFailure]:
        out: list[ChunkResult | WorkerFailure] = []
        try:
            out.append(self.results.get(timeout=timeout))
            while True:
                out.append(self.results.get_nowait())
        except queue.Empty:
            pass
        if not out:
            dead = [w.name for w in self.workers if not w.is_alive()]
            if dead:
                raise _Fatal(f"a worker stopped: {', '.join(dead)}")
        for msg in out:
            if isinstance(msg, ChunkResult):
                self.outstanding[msg.worker] -= 1
        return out

    def _close_workers(self, graceful: bool) -> None:
        if graceful:
            for w in self.workers:
                w.inbox.put(None)
            deadline = time.monotonic() + 30
            for w in self.workers:
                w.join(timeout=max(0.1, deadline - time.monotonic()))
        for w in self.workers:
            w.stop()  # nothing unacknowledged is worth waiting for
        for w in self.workers:
            w.join(timeout=5)

    def _account(self, r: ChunkResult) -> None:
        self.read += r.rows_read
        self.failed += len(r.bad)
        m = self.metrics
        if m is not None:
            m.lines.labels("processed").inc(r.rows_published)
            m.chunk_duration.observe(r.seconds)
            m.kafka_retry.inc(max(0.0, r.kafka_fault_s))
            if r.bad:
                m.lines.labels("error").inc(len(r.bad))
                m.errors.inc(len(r.bad))

    def _report_bad(self, bad: BadRows | None) -> None:
        """Logs bad rows (a sample and counts: :mod:`ingest_worker.badrows`), and every one of
        them to the errors log; called in file order, as the watermark passes their chunk."""
        if bad is None:
            return
        self.bad_log.add(bad)
        out = self.errors_log
        if out is None:
            return
        assert len(bad.rows) == bad.count  # the workers report every one (every_bad_row)
        for b in bad.rows:
            out.write(orjson.dumps({
                "line": b.line, "row": b.row, "offset": b.offset, "reason": b.reason,
                "source": self.spec.source.url}).decode() + "\n")
        out.flush()

    def _save(self, cp: Checkpoint) -> Checkpoint:
        self.store.save(cp)
        if self.metrics is not None:
            self.metrics.offset.set(cp.byte_offset)
        log.debug(f"Checkpoint saved at offset {cp.byte_offset}",
                  extra={"byte_offset": cp.byte_offset, "row": cp.row, "line": cp.line})
        if self.reporter is not None:
            self.reporter(cp)
        return cp


def file_layout(spec: CsvIngestionSpec, source: CsvSource) -> tuple[Header, Layout]:
    """The file's header, read from its start, and the layout of its rows."""
    check_format(spec.format)
    encoding = normalize_encoding(spec.format.encoding)
    with source.open(0, buffer_bytes=HEADER_READ_BYTES) as f:
        header = read_header(f, spec.format, encoding)
    return header, resolve_layout(spec, header, source.url, source.version, encoding)


def run_ingestion(
    spec: CsvIngestionSpec,
    store: CheckpointStore,
    *,
    reporter: Callable[[Checkpoint], None] | None = None,
    metrics: Metrics | None = None,
    errors_log: TextIO | None = None,
    tuning: Tuning | None = None,
    stop: threading.Event | None = None,
    source: CsvSource | None = None,
    span: Span | None = None,
    producers: ProducerPool | None = None,
    check_topics: bool = True,
    txn_key: CheckpointKey | None = None,
    schemas: SchemaLedger | None = None,
) -> IngestResult:
    """Runs one ingestion to the end (or to a fatal error) and returns how it ended.

    ``store`` gives the checkpoint to resume from and receives new ones; ``reporter`` is called
    after each saved checkpoint; ``metrics`` receives the run's Prometheus metrics (None: none);
    ``stop`` (set from another thread or a signal handler) asks for a graceful stop that saves
    the checkpoint. ``source`` is the file already probed (default: ``spec.source.url``),
    ``span`` the byte range of it to ingest (default: all of it). ``producers`` lends the
    workers producers kept from an earlier run of this process, and ``check_topics`` False
    skips the topic check such a run made. ``txn_key`` names the unit's transactional id and
    checkpoint key, which exactly-once delivery needs. ``schemas`` records the schema the
    ingestion's first run settles (default: ``store``, when it can, else memory). Expected
    failures (source missing or changed, Kafka unavailable past the retry budget, too many bad
    rows, bad configuration, a schema the registry refuses) are returned as a result with
    ``completed=False`` and a non-zero ``exit_code``, never raised.
    """
    def make_run(txn: Transactions | None, check: bool) -> _Run:
        return _Run(
            spec=spec,
            store=store if txn is None else txn.store(store),
            metrics=metrics,
            tuning=tuning or Tuning(),
            errors_log=errors_log,
            reporter=reporter,
            stop_requested=stop_requested,
            source=source,
            span=span or Span(),
            producers=producers,
            check_topics=check,
            txn=txn,
            schemas=ledger,
        )

    stop_requested = stop or threading.Event()
    ledger = schemas or (cast(SchemaLedger, store) if hasattr(store, "record_schema")
                         else MemoryLedger())
    run = make_run(None, check_topics)
    try:
        if spec.kafka.delivery is not Delivery.EXACTLY_ONCE:
            return run.run()
        if txn_key is None:
            raise ConfigError("exactly-once delivery needs a transactional id")
        return _run_exactly_once(make_run, txn_key, check_topics)
    except (ConfigError, SourceError, TopicError) as e:
        code = (EXIT_CONFIG if isinstance(e, ConfigError)
                else EXIT_KAFKA if isinstance(e, TopicError) else EXIT_FATAL)
        msg = f"{type(e).__name__}: {e}" if isinstance(e, ConfigError) else str(e)
        log.error(msg)
        cp = store.load()
        return IngestResult(False, code, msg, cp, time.monotonic() - run.started)


def _run_exactly_once(
    make_run: Callable[[Transactions | None, bool], _Run], key: CheckpointKey, check_topics: bool
) -> IngestResult:
    """Passes over the unit, each from the last commit, until one ends the run: a failed
    transaction aborts its pass, and the next one starts with a new producer."""
    from ingest_worker.exactly_once import Transactions

    run = make_run(None, check_topics)
    txn = Transactions(run.spec, key)
    try:
        while True:
            run = make_run(txn, check_topics)
            try:
                return run.run()
            except ProducerFenced as e:  # while starting: a newer attempt is already there
                return IngestResult(False, EXIT_FENCED, f"fenced: {e}", None,
                                    time.monotonic() - run.started)
            except KafkaUnavailable as e:  # starting the pass: the broker, the coordinator
                why, refusals, cp = str(e), tuple[Refusal, ...](), None
            except _Rewind as e:
                why, refusals, cp = e.args[0], e.refusals, e.checkpoint
            check_topics = False
            give_up = txn.rewind(why, refusals)
            if give_up is not None:
                log.error(give_up)
                return IngestResult(False, EXIT_KAFKA, give_up, cp,
                                    time.monotonic() - run.started)
    finally:
        txn.close()


GC_THRESHOLDS = (100_000, 50, 100)
"""Python's default (700, 10, 10) runs the cyclic collector every 700 allocations, and a file
of bad rows allocates a few objects per row (its record and reason) that live until its chunk
is acknowledged: 2M rows, 90% bad, took 10.6 s of wall time, 3 s of it in the collector. The
worker makes almost no cycles, so it collects a hundred times less often: 7.5 s."""


def tune_gc() -> None:
    """For a worker process, once its modules are imported: what exists then lives as long as
    the process, so the collector never walks it again (``gc.freeze``), and it runs less often."""
    gc.collect()  # no start-up garbage is frozen with the rest
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM (pod deletion, suspend) asks for a graceful stop; a second one exits at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
