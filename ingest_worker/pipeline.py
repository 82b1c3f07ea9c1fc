"""The ingestion pipeline: reader → bounded queue → worker processes → Kafka; checkpoints.

A reader thread reads the file in blocks and cuts them into chunks on record boundaries
(vectorised scan), numbers them, and hands them to a fixed pool of P workers through bounded
queues. Workers are threads by default: polars parses and encodes, and librdkafka produces a
whole chunk per call (``native.py``), both outside the GIL, so they use several cores in one
process (one copy of polars in memory); ``Tuning(processes=True)`` runs them as child processes.
Workers report each chunk once Kafka acknowledged all of it; the main thread advances the
contiguous low-watermark over those reports and saves it as the checkpoint.

At most ``window`` chunks are between the reader and the watermark, which bounds memory (and
the rows a crash can make us send twice) whatever the file size or the broker's speed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import queue
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import IO, Any, TextIO, cast

import numpy as np
import orjson

from ingest_worker.api.spec import CsvIngestionSpec, OnSourceChange
from ingest_worker.checkpoint import (
    Checkpoint,
    CheckpointStore,
    ChunkDone,
    Counters,
    Outcome,
    Watermark,
)
from ingest_worker.dialect import (
    ConfigError,
    Header,
    Layout,
    check_format,
    event_id_prefix,
    normalize_encoding,
    python_records,
    read_header,
)
from ingest_worker.exitcodes import (
    EXIT_CONFIG,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TOO_MANY_ERRORS,
)
from ingest_worker.kafka.topics import TopicError, ensure_topics
from ingest_worker.logs import Progress, fmt_duration
from ingest_worker.metrics import Metrics
from ingest_worker.pool import (
    BadRowReport,
    Chunk,
    ChunkResult,
    WorkerConfig,
    WorkerFailure,
    WorkerProcess,
    WorkerThread,
    tune_allocators,
)
from ingest_worker.producer import producer_config
from ingest_worker.scan import Scan, blank_mask, find_boundaries
from ingest_worker.sources import CsvSource, SourceError

log = logging.getLogger("ingest_worker")


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
    polars_threads: int = 1
    stop_grace_s: float = 30.0
    processes: bool = False
    """Workers as child processes instead of threads (each holds its own polars: more memory;
    for many cores, or when the native producer is unavailable and the GIL would bind)."""


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


@dataclass
class _ChunkMeta:
    end_offset: int
    end_row: int
    end_line: int
    rows: int
    nbytes: int


class _WorkerGone(Exception):
    """A worker stopped taking chunks (its process or thread is gone)."""


class _Fatal(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FATAL) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_layout(
    spec: CsvIngestionSpec, header: Header, url: str, version: str | None, encoding: str
) -> Layout:
    """The columns and message layout, from the spec and the header (pure: unit-tested)."""
    fmt = spec.format
    columns = tuple(fmt.columns) if fmt.columns else (header.names or ())
    if len(set(columns)) != len(columns):
        dups = sorted({c for c in columns if columns.count(c) > 1})
        raise ConfigError(f"duplicate column names: {', '.join(dups)}")
    if columns:
        for what, names in (("key column", spec.kafka.key_columns),
                            ("typed column", list(fmt.column_types))):
            missing = [c for c in names if c not in columns]
            if missing:
                raise ConfigError(f"{what} not in the file's columns: {', '.join(missing)}")
        added = {"_source", "_line"} if spec.kafka.include_metadata else set()
        added |= {"_id"} if spec.kafka.include_event_id else set()
        reserved = added & set(columns)
        if reserved:
            raise ConfigError(f"columns clash with metadata fields: {', '.join(sorted(reserved))}")
    return Layout(
        columns=columns,
        delimiter=fmt.delimiter,
        quote_char=fmt.quote_char,
        escape_char=fmt.escape_char,
        encoding=encoding,
        column_types={c: str(t.value) for c, t in fmt.column_types.items()},
        key_columns=tuple(spec.kafka.key_columns),
        include_event_id=spec.kafka.include_event_id,
        include_metadata=spec.kafka.include_metadata,
        source_url=url,
        id_prefix=event_id_prefix(url, version),
    )


# --- the reader -----------------------------------------------------------------------------------


class _SourceReader(io.RawIOBase):
    """The source stream as the reader sees it: never past the size recorded at the start, and
    read errors turned into clear fatal messages.

    A file that grows while it is read would otherwise hand us a half-written last line; its
    snapshot (the size versioned at the start) is what this run ingests. If that snapshot ends
    in the middle of a line and the file has grown past it, the run fails ("source changed
    while reading") rather than publish a torn row.
    """

    def __init__(self, raw: IO[bytes], url: str, compressed: bool, limit: int | None) -> None:
        super().__init__()
        self.raw = raw
        self.url = url
        self.compressed = compressed
        self.remaining = limit
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 30
        if self.remaining is not None:
            if self.remaining <= 0:
                self._check_growth()
                return b""
            n = min(n, self.remaining)
        try:
            block = self.raw.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise _Fatal(f"the compressed source {self.url} is truncated or corrupt: {e}") from e
        except OSError as e:
            what = "the compressed source" if self.compressed else "the source"
            raise _Fatal(f"reading {what} {self.url} failed: {e}") from e
        except Exception as e:  # decompressors raise their own types (zstd, lzma)
            if self.compressed:
                raise _Fatal(
                    f"the compressed source {self.url} is truncated or corrupt: {e!r}"
                ) from e
            raise
        if block:
            self.last = block[-1:]
            if self.remaining is not None:
                self.remaining -= len(block)
        elif self.remaining is not None:
            raise _Fatal(f"source changed while reading: {self.url} is shorter than the "
                         f"{self.remaining} more bytes expected")
        return block

    def _check_growth(self) -> None:
        if self.last in (b"", b"\n"):
            return  # the snapshot ends on a line end: its records are whole
        try:
            more = self.raw.read(1)
        except OSError:
            more = b""
        if more:
            raise _Fatal(f"source changed while reading: {self.url} grew past the size it had "
                         "at the start, in the middle of a line")


def cut_chunks(
    stream: IO[bytes],
    layout: Layout,
    start: Checkpoint,
    tuning: Tuning,
    max_rows: int,
) -> Iterator[tuple[Chunk, _ChunkMeta]]:
    """Reads the stream from ``start`` and yields chunks cut on record boundaries.

    Chunk boundaries depend only on the file and the sizes, so a resumed run cuts the same way
    from the same offset (event ids come from byte offsets and never depend on the cut anyway).
    """
    if not layout.vectorised:
        yield from _cut_chunks_python(stream, layout, start, tuning, max_rows)
        return
    quote = layout.quote_byte
    offset, row, line, seq = start.byte_offset, start.row, start.line, 0
    carry = b""
    while True:
        block = stream.read(tuning.read_block_bytes)
        eof = not block
        buf = carry + block if carry else block
        b = find_boundaries(buf, quote, layout.delimiter_byte)
        ends = b.ends
        pos = 0
        if len(ends):
            starts = np.concatenate(([0], ends[:-1]))
            blank = blank_mask(buf, starts, ends)
            nrec = len(ends)
            i = 0
            while i < nrec:
                j = min(i + max_rows, nrec) - 1
                jb = int(np.searchsorted(ends, pos + tuning.max_chunk_bytes, side="right")) - 1
                j = max(i, min(j, jb))
                end = int(ends[j])
                rows = (j - i + 1) - int(np.count_nonzero(blank[i : j + 1]))
                nl_end = int(b.lines[j + 1]) if j + 1 < nrec else b.newlines
                newlines = nl_end - int(b.lines[i])
                data = buf[pos:end]
                scan = None
                if not b.literal_quotes:  # the worker's scan would be the same: hand it over
                    lo, hi = np.searchsorted(b.toggles, (pos, end)).tolist()
                    scan = Scan(ends[i : j + 1] - pos, b.lines[i : j + 1] - b.lines[i],
                                b.toggles[lo:hi] - pos)
                chunk = Chunk(seq, data, offset, row, line, rows, scan=scan)
                offset += len(data)
                row += rows
                line += newlines
                yield chunk, _ChunkMeta(offset, row, line, rows, len(data))
                seq += 1
                pos = end
                i = j + 1
        carry = buf[pos:]
        if eof:
            if carry:
                rows = 1 if carry.strip(b"\r\n") else 0
                chunk = Chunk(seq, carry, offset, row, line, rows)
                offset += len(carry)
                yield chunk, _ChunkMeta(offset, row + rows, line + carry.count(b"\n"), rows,
                                        len(carry))
            return
        if len(carry) > tuning.max_record_bytes:
            raise _Fatal(
                f"record at line {line} is longer than {tuning.max_record_bytes} bytes "
                "(an unterminated quote?)"
            )


def _cut_chunks_python(
    stream: IO[bytes], layout: Layout, start: Checkpoint, tuning: Tuning, max_rows: int
) -> Iterator[tuple[Chunk, _ChunkMeta]]:
    from ingest_worker.parse import Spans, is_blank_record

    offset, row, line, seq = start.byte_offset, start.row, start.line, 0
    recs: list[bytes] = []
    nls: list[int] = []
    size = 0

    def emit() -> tuple[Chunk, _ChunkMeta]:
        nonlocal offset, row, line, seq, size
        data = b"".join(recs)
        lens = np.fromiter((len(r) for r in recs), dtype=np.int64, count=len(recs))
        ends = np.cumsum(lens)
        starts = ends - lens
        nl = np.fromiter(nls, dtype=np.int64, count=len(nls))
        lines = np.cumsum(nl) - nl
        rows = sum(1 for r in recs if not is_blank_record(r))
        chunk = Chunk(seq, data, offset, row, line, rows, Spans(starts, ends, lines))
        offset += len(data)
        row += rows
        line += int(nl.sum())
        seq += 1
        recs.clear()
        nls.clear()
        size = 0
        return chunk, _ChunkMeta(offset, row, line, rows, len(data))

    for rec, newlines in python_records(stream, layout):
        recs.append(rec)
        nls.append(newlines)
        size += len(rec)
        if len(recs) >= max_rows or size >= tuning.max_chunk_bytes:
            yield emit()
    if recs:
        yield emit()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    spec: CsvIngestionSpec
    store: CheckpointStore
    metrics: Metrics
    tuning: Tuning
    errors_log: TextIO | None
    reporter: Callable[[Checkpoint], None] | None
    stop_requested: threading.Event
    started: float = field(default_factory=time.monotonic)
    pool: _Pool | None = None

    def run(self) -> IngestResult:
        try:
            return self._run()
        finally:
            if self.pool is not None:
                self.pool.close(graceful=False)
                self.pool = None

    def _run(self) -> IngestResult:
        spec = self.spec
        check_format(spec.format)
        encoding = normalize_encoding(spec.format.encoding)
        source = CsvSource(
            spec.source.url, spec.source.compression, endpoint_url=spec.source.endpoint_url
        )
        if spec.source.expected_version and source.version != spec.source.expected_version:
            raise SourceError(
                f"source version is {source.version}, expected {spec.source.expected_version}"
            )
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
        # Before any row is read: a missing topic fails here, by name, not as a broker outage.
        ensure_topics(spec.kafka, spec.kafka.retry_budget_seconds)
        # Started first: the workers' imports overlap with reading the header.
        self.pool = _Pool(spec.worker.parallelism, self.tuning.processes)
        with source.open(0) as f:
            header = read_header(f, spec.format, encoding)
        layout = resolve_layout(spec, header, source.url, source.version, encoding)
        start = Checkpoint(
            byte_offset=header.data_offset,
            row=0,
            line=header.data_line,
            source_url=source.url,
            source_version=source.version,
            counters=Counters(bytes_read=header.data_offset, bytes_total=source.size),
        )
        if cp is not None and cp.byte_offset > start.byte_offset:
            # bytes_read is by definition the offset (older stores may not have kept it).
            counters = replace(cp.counters, bytes_total=source.size, bytes_read=cp.byte_offset)
            start = replace(cp, counters=counters)
            log.info("Resuming from checkpoint", extra={
                "byte_offset": cp.byte_offset, "row": cp.row, "line": cp.line})
        if source.size is not None:
            self.metrics.bytes_total.set(source.size)
        else:
            self.metrics.bytes_total.set(-1)
        self.metrics.offset.set(start.byte_offset)
        log.info(f"Started processing file {source.url}", extra={
            "source": source.url, "version": source.version, "byte_offset": start.byte_offset,
            "columns": list(layout.columns)})
        return self._pump(source, layout, start)

    def _summary(self, cp: Checkpoint, what: str) -> str:
        c = cp.counters
        return (
            f"{what}: {self.spec.source.url}: rows read {c.rows_read}, published "
            f"{c.rows_published}, failed {c.rows_failed}, duration "
            f"{fmt_duration(time.monotonic() - self.started)}"
        )

    def _pump(self, source: CsvSource, layout: Layout, start: Checkpoint) -> IngestResult:
        spec, tuning, pool = self.spec, self.tuning, self.pool
        assert pool is not None
        window = max(2, tuning.window_per_worker * len(pool.procs))
        # A crash re-sends at most the unsaved rows below the watermark (< every_rows / 2, see
        # save_rows) plus the chunks in the window: size chunks so both fit in every_rows.
        max_rows = tuning.max_chunk_rows or max(1000, spec.checkpoint.every_rows // (2 * window))
        pool.configure(
            WorkerConfig(
                layout=layout,
                topic=spec.kafka.topic,
                dead_letter_topic=spec.kafka.dead_letter_topic,
                producer_config=producer_config(
                    spec.kafka.bootstrap_servers,
                    spec.kafka.retry_budget_seconds,
                    spec.kafka.producer_properties,
                ),
                retry_budget_s=float(spec.kafka.retry_budget_seconds),
                polars_threads=tuning.polars_threads,
                log_level=logging.getLevelName(log.getEffectiveLevel()),
            )
        )
        metas: dict[int, _ChunkMeta] = {}
        slots = threading.Semaphore(window)
        reader_state: dict[str, Any] = {"chunks": None, "error": None}
        reader_stop = threading.Event()

        def reader() -> None:
            try:
                with source.open(start.byte_offset) as raw:
                    limit = None if source.size is None else source.size - start.byte_offset
                    r = _SourceReader(raw, source.url, not source.seekable, limit)
                    f = cast(IO[bytes], r if layout.vectorised else io.BufferedReader(r, 1 << 20))
                    n = 0
                    for chunk, meta in cut_chunks(f, layout, start, tuning, max_rows):
                        while not slots.acquire(timeout=0.2):
                            if reader_stop.is_set():
                                return
                        if reader_stop.is_set():
                            return
                        metas[chunk.seq] = meta  # before the send: the result may come fast
                        pool.dispatch(chunk)
                        self.metrics.lines.labels("read").inc(chunk.rows)
                        n += 1
                    reader_state["chunks"] = n
            except BaseException as e:
                reader_state["error"] = e

        t = threading.Thread(target=reader, name="csv-reader", daemon=True)
        t.start()

        wm = Watermark(start)
        saved = start
        last_save = time.monotonic()
        totals = {"read": 0, "failed": 0}
        progress = Progress(source.size)
        rows0, bytes0 = start.counters.rows_read, start.byte_offset
        bytes_counted = start.byte_offset
        fatal: _Fatal | None = None
        stopping_since: float | None = None
        save_rows = max(1, spec.checkpoint.every_rows // 2)
        bad_by_seq: dict[int, list[BadRowReport]] = {}
        try:
            while True:
                if reader_state["error"] is not None:
                    err = reader_state["error"]
                    if isinstance(err, _Fatal):
                        raise err
                    if isinstance(err, _WorkerGone):
                        raise _Fatal(f"a worker process died: {pool.describe_dead() or err}")
                    if isinstance(err, (EOFError, zlib.error)):
                        raise _Fatal(f"the compressed source {source.url} is truncated or "
                                     f"corrupt: {err}")
                    raise _Fatal(f"reading the source failed: {err!r}")
                n = reader_state["chunks"]
                if n is not None and wm.next_seq >= n:
                    break
                if self.stop_requested.is_set():
                    if stopping_since is None:
                        stopping_since = time.monotonic()
                        reader_stop.set()
                        log.warning("Stop requested: finishing the chunks in flight")
                    # Wait for what was handed out (bounded by a grace period), then stop.
                    if (not metas and not t.is_alive()) or \
                            time.monotonic() - stopping_since > tuning.stop_grace_s:
                        raise _Fatal("interrupted; checkpoint saved", EXIT_INTERRUPTED)
                msgs = pool.results(0.2)
                if not msgs:
                    dead = pool.describe_dead()
                    if dead:
                        raise _Fatal(f"a worker process died: {dead}")
                now = time.monotonic()
                for msg in msgs:
                    if isinstance(msg, WorkerFailure):
                        raise _Fatal(msg.message)
                    self._account(msg, totals)
                    if msg.bad:
                        bad_by_seq[msg.seq] = msg.bad
                    meta = metas.pop(msg.seq)
                    before = wm.next_seq
                    wm.finish(ChunkDone(msg.seq, meta.end_offset, meta.end_row, meta.end_line,
                                        msg.rows_read, msg.rows_published, len(msg.bad),
                                        meta.nbytes))
                    for seq in range(before, wm.next_seq):
                        slots.release()
                        self._report_bad(bad_by_seq.pop(seq, []))
                    self._check_error_policy(totals)
                if wm.checkpoint.byte_offset > bytes_counted:
                    self.metrics.bytes_read.inc(wm.checkpoint.byte_offset - bytes_counted)
                    bytes_counted = wm.checkpoint.byte_offset
                if wm.checkpoint.row - saved.row >= save_rows or (
                    now - last_save >= spec.checkpoint.every_seconds
                    and wm.checkpoint.byte_offset > saved.byte_offset
                ):
                    saved, last_save = self._save(wm.checkpoint), now
                self._tick(wm, progress, rows0, bytes0)
        except _Fatal as e:
            fatal = e
        except KeyboardInterrupt:
            fatal = _Fatal("interrupted; checkpoint saved", EXIT_INTERRUPTED)
        finally:
            reader_stop.set()
            pool.close(graceful=fatal is None)
            self.pool = None
            t.join(timeout=5)
            progress.update(wm.checkpoint.counters.rows_read - rows0,
                            wm.checkpoint.byte_offset - bytes0, force=True)
            progress.close()
        cp = wm.checkpoint
        duration = time.monotonic() - self.started
        if fatal is not None:
            if cp.byte_offset > saved.byte_offset:
                saved = self._save(cp)
            log.error(fatal.args[0], extra={"byte_offset": saved.byte_offset, "row": saved.row})
            self.store.final(saved, Outcome(False, fatal.args[0]))
            return IngestResult(False, fatal.exit_code, fatal.args[0], saved, duration)
        cp = replace(cp, done=True)
        self.metrics.offset.set(cp.byte_offset)
        self.metrics.duration.observe(duration)
        summary = self._summary(cp, "completed")
        log.info(
            f"Finished file {source.url} (Duration: {fmt_duration(duration)}, "
            f"Rows: {cp.counters.rows_read})",
            extra={"rows_published": cp.counters.rows_published,
                   "rows_failed": cp.counters.rows_failed},
        )
        self.store.final(cp, Outcome(True, summary))
        return IngestResult(True, EXIT_OK, summary, cp, duration)

    def _account(self, r: ChunkResult, totals: dict[str, int]) -> None:
        m = self.metrics
        m.lines.labels("processed").inc(r.rows_published)
        m.chunk_duration.observe(r.seconds)
        totals["read"] += r.rows_read
        if r.bad:
            m.lines.labels("error").inc(len(r.bad))
            m.errors.inc(len(r.bad))
            totals["failed"] += len(r.bad)

    def _report_bad(self, bad: list[BadRowReport]) -> None:
        """Logs bad rows; called in file order, as the watermark passes their chunk."""
        for b in bad:
            log.warning(f"Failed to parse row {b.line}: {b.reason}",
                        extra={"line": b.line, "row": b.row, "offset": b.offset})
            if self.errors_log is not None:
                self.errors_log.write(orjson.dumps({
                    "line": b.line, "row": b.row, "offset": b.offset, "reason": b.reason,
                    "source": self.spec.source.url}).decode() + "\n")
        if bad and self.errors_log is not None:
            self.errors_log.flush()

    def _check_error_policy(self, totals: dict[str, int]) -> None:
        pol = self.spec.errors
        failed, read = totals["failed"], totals["read"]
        if pol.max_errors is not None and failed > pol.max_errors:
            raise _Fatal(f"too many bad rows: {failed} > maxErrors {pol.max_errors}",
                         EXIT_TOO_MANY_ERRORS)
        if pol.max_error_ratio is not None and read >= 1000 and failed / read > pol.max_error_ratio:
            raise _Fatal(
                f"too many bad rows: {failed} of {read} ({failed / read:.2%}) > maxErrorRatio "
                f"{pol.max_error_ratio}",
                EXIT_TOO_MANY_ERRORS,
            )

    def _save(self, cp: Checkpoint) -> Checkpoint:
        self.store.save(cp)
        self.metrics.offset.set(cp.byte_offset)
        log.debug(f"Checkpoint saved at offset {cp.byte_offset}",
                  extra={"byte_offset": cp.byte_offset, "row": cp.row, "line": cp.line})
        if self.reporter is not None:
            self.reporter(cp)
        return cp

    def _tick(self, wm: Watermark, progress: Progress, rows0: int, bytes0: int) -> None:
        c = wm.checkpoint
        progress.update(c.counters.rows_read - rows0, c.byte_offset - bytes0)


class _Pool:
    """The P workers: threads of this process (default) or child processes.

    Started first thing, so their imports (polars, librdkafka) overlap with reading the header;
    configured once the layout is known.
    """

    def __init__(self, n: int, processes: bool) -> None:
        self.processes = processes
        self.outstanding = [0] * n
        self.dead: dict[int, str] = {}
        self.out_q: queue.Queue[Any] = queue.Queue()
        if processes:
            self.procs: list[Any] = [WorkerProcess(i) for i in range(n)]
            self.from_w = [p.from_worker for p in self.procs]
        else:
            # polars' own pool serves every worker thread: give it one thread per worker.
            os.environ.setdefault("POLARS_MAX_THREADS", str(max(1, n)))
            tune_allocators()
            self.procs = [WorkerThread(i, self.out_q) for i in range(n)]
            self.from_w = []
            threading.Thread(target=_warm_up, name="csv-ingest-import", daemon=True).start()

    def configure(self, cfg: WorkerConfig) -> None:
        for p in self.procs:
            if self.processes:
                p.to_worker.send(cfg)
            else:
                p.configure(cfg)

    def dispatch(self, chunk: Chunk) -> None:
        # The least busy worker; this blocks while it is busy, which is the backpressure.
        i = min(range(len(self.procs)), key=self.outstanding.__getitem__)
        self.outstanding[i] += 1
        p = self.procs[i]
        if not self.processes:
            while True:
                if not p.is_alive():
                    raise _WorkerGone(p.name)
                try:
                    p.in_q.put(chunk, timeout=0.2)
                    return
                except queue.Full:
                    continue
        try:
            p.to_worker.send(chunk)
        except (BrokenPipeError, EOFError, OSError) as e:
            raise _WorkerGone(f"{p.name}: {e}") from e

    def results(self, timeout: float) -> list[ChunkResult | WorkerFailure]:
        out: list[ChunkResult | WorkerFailure] = []
        if not self.processes:
            with contextlib.suppress(queue.Empty):
                out.append(self.out_q.get(timeout=timeout))
                while True:
                    out.append(self.out_q.get_nowait())
        else:
            live = [c for i, c in enumerate(self.from_w) if i not in self.dead]
            for ready in wait(live, timeout):
                assert isinstance(ready, Connection)
                i = self.from_w.index(ready)
                try:
                    while ready.poll():
                        out.append(ready.recv())
                except (EOFError, OSError):
                    self.procs[i].join(timeout=1)
                    self.dead[i] = f"{self.procs[i].name} (exit code {self.procs[i].exitcode})"
        for msg in out:
            if isinstance(msg, ChunkResult):
                self.outstanding[msg.worker] -= 1
        return out

    def describe_dead(self) -> str:
        for i, p in enumerate(self.procs):
            if not p.is_alive() and i not in self.dead:
                self.dead[i] = f"{p.name} (exit code {p.exitcode})"
        return ", ".join(self.dead.values())

    def close(self, graceful: bool) -> None:
        if graceful:
            for p in self.procs:
                with contextlib.suppress(OSError):
                    if self.processes:
                        p.to_worker.send(None)
                    else:
                        p.in_q.put(None)
            deadline = time.monotonic() + 30
            for p in self.procs:
                p.join(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()  # nothing unacknowledged is worth waiting for
        for p in self.procs:
            p.join(timeout=5)
        if self.processes:
            for p in self.procs:
                p.to_worker.close()
                p.from_worker.close()


def _warm_up() -> None:
    """Imports the workers' heavy modules in the background while the header is read."""
    with contextlib.suppress(Exception):
        import ingest_worker.native
        import ingest_worker.parse  # noqa: F401


def run_ingestion(
    spec: CsvIngestionSpec,
    store: CheckpointStore,
    *,
    reporter: Callable[[Checkpoint], None] | None = None,
    metrics: Metrics | None = None,
    errors_log: TextIO | None = None,
    tuning: Tuning | None = None,
    stop: threading.Event | None = None,
) -> IngestResult:
    """Runs one ingestion to the end (or to a fatal error) and returns how it ended.

    ``store`` gives the checkpoint to resume from and receives new ones; ``reporter`` is called
    after each saved checkpoint; ``stop`` (set from another thread or a signal handler) asks for
    a graceful stop that saves the checkpoint. Expected failures (source missing or changed,
    Kafka unavailable past the retry budget, too many bad rows, bad configuration) are returned
    as a result with ``completed=False`` and a non-zero ``exit_code``, never raised.
    """
    run = _Run(
        spec=spec,
        store=store,
        metrics=metrics or Metrics(),
        tuning=tuning or Tuning(),
        errors_log=errors_log,
        reporter=reporter,
        stop_requested=stop or threading.Event(),
    )
    try:
        return run.run()
    except (ConfigError, SourceError, TopicError) as e:
        code = EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_FATAL
        msg = f"{type(e).__name__}: {e}" if isinstance(e, ConfigError) else str(e)
        log.error(msg)
        cp = store.load()
        return IngestResult(False, code, msg, cp, time.monotonic() - run.started)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM (pod deletion, suspend) asks for a graceful stop; a second one exits at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
