"""The worker processes: parse a chunk, produce its rows, report it acknowledged.

Each process owns one producer. It parses chunk k+1 while librdkafka is still delivering chunk
k, then flushes k (short, since most of it is out by then) and reports it, so parsing, encoding
and producing overlap inside a process as well as across processes.

This module is imported by the main process too, for the message types; polars is imported
only inside the worker processes (it costs RSS the main process does not need).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ingest_worker.dialect import Layout
    from ingest_worker.parse import ParsedChunk, Spans
    from ingest_worker.scan import Scan


# polars allocates through its own jemalloc, which by default keeps freed pages for 10 s: a
# chunk's buffers would stay resident after use. Returned at once (by a background thread),
# peak RSS drops by ~25 MB, CPU unchanged within the noise (bench/README.md). Read when
# polars loads.
POLARS_MALLOC_ENV = "_RJEM_MALLOC_CONF"
POLARS_MALLOC_CONF = "background_thread:true,narenas:2,dirty_decay_ms:0,muzzy_decay_ms:0"
MMAP_THRESHOLD = 4 * 1024 * 1024


def tune_allocators() -> None:
    """Keeps chunk-sized buffers from staying resident once freed: polars' jemalloc returns
    pages at once, and glibc serves the messages' buffers (a few MB each) with their own
    mappings, given back on free, instead of from thread arenas that keep them (the dynamic
    threshold would otherwise rise to their size). Call before polars loads."""
    os.environ.setdefault(POLARS_MALLOC_ENV, POLARS_MALLOC_CONF)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        m_mmap_threshold = -3
        ctypes.CDLL(None).mallopt(m_mmap_threshold, MMAP_THRESHOLD)


@dataclass(frozen=True)
class Chunk:
    """Consecutive records of the file, cut on record boundaries by the reader."""

    seq: int
    data: bytes
    start_offset: int
    start_row: int
    start_line: int
    rows: int
    spans: Spans | None = None
    scan: Scan | None = None
    """The reader's record boundaries (so the worker need not scan the chunk again)."""


@dataclass(frozen=True)
class BadRowReport:
    line: int
    row: int
    offset: int
    reason: str


@dataclass(frozen=True)
class ChunkResult:
    seq: int
    worker: int
    rows_read: int
    rows_published: int
    bad: list[BadRowReport]
    fast: bool
    seconds: float


@dataclass(frozen=True)
class WorkerFailure:
    worker: int
    message: str
    kafka: bool


@dataclass(frozen=True)
class WorkerConfig:
    layout: Layout
    topic: str
    dead_letter_topic: str | None
    producer_config: dict[str, Any]
    retry_budget_s: float
    polars_threads: int = 1
    log_level: str = "INFO"
    native_producer: bool = True


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the main process dies, so a killed run leaves no orphans."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def worker_main(index: int, conn_in: Connection, conn_out: Connection, parent_pid: int) -> None:
    """Entry point of a worker process.

    Receives a :class:`WorkerConfig`, then chunks, then None (no more chunks); sends a
    :class:`ChunkResult` per acknowledged chunk, or one :class:`WorkerFailure`. Plain pipes, not
    multiprocessing queues: no locks, hence no semaphore tracker process.
    """
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    # Ctrl-C reaches the whole process group; the main process decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        cfg: WorkerConfig = conn_in.recv()
        os.environ.setdefault("POLARS_MAX_THREADS", str(cfg.polars_threads))
        tune_allocators()
        from ingest_worker.logs import setup_logging

        setup_logging(cfg.log_level)
        _run(index, cfg, conn_in, conn_out)
    except (EOFError, BrokenPipeError):
        return  # the main process is gone or stopped us
    except Exception as e:
        from ingest_worker.producer import KafkaUnavailable

        kafka = isinstance(e, KafkaUnavailable)
        msg = str(e) if kafka else f"worker {index} crashed: {e!r}\n{traceback.format_exc()}"
        with contextlib.suppress(Exception):
            conn_out.send(WorkerFailure(index, msg, kafka))


class Channel(Protocol):
    """What a worker needs of its input and output: a pipe end, or a queue for threads."""

    def poll(self, timeout: float | None = ...) -> bool: ...
    def recv(self) -> Any: ...
    def send(self, obj: Any) -> None: ...


def _run(
    index: int,
    cfg: WorkerConfig,
    conn_in: Channel,
    conn_out: Channel,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    import logging

    from ingest_worker import native
    from ingest_worker.parse import parse_chunk
    from ingest_worker.producer import Deliverer

    conf = dict(cfg.producer_config)
    conf["logger"] = logging.getLogger(f"ingest_worker.kafka.{index}")
    fast_producer: native.NativeProducer | None = None
    if cfg.native_producer and native.available():
        fast_producer = native.NativeProducer(
            cfg.producer_config, cfg.topic, cfg.retry_budget_s, should_stop=should_stop
        )
    # The Python client: the fallback path, and the dead-letter topic (rare, needs headers).
    # Created only when needed: each client is a handful of threads and buffers.
    slow: list[Deliverer] = []

    def deliverer() -> Deliverer:
        if not slow:
            slow.append(Deliverer(conf, cfg.retry_budget_s, should_stop=should_stop))
        return slow[0]

    if fast_producer is None:
        deliverer()
    layout = cfg.layout
    # The chunk produced but not yet flushed; its bytes and messages are already let go.
    pending: ChunkResult | None = None

    def finish(result: ChunkResult) -> None:
        if fast_producer is not None:
            fast_producer.flush_all()
        for d in slow:
            d.flush_all()
        seconds = time.monotonic() - result.seconds
        conn_out.send(dataclasses.replace(result, seconds=seconds))

    try:
        while True:
            if should_stop():
                return
            # With a chunk in flight, wait only briefly for the next one: flush when idle.
            if not conn_in.poll(0.02 if pending is not None else None):
                if pending is not None:
                    finish(pending)
                    pending = None
                continue
            item: Chunk | None = conn_in.recv()
            if item is None:  # no more chunks
                if pending is not None:
                    finish(pending)
                if fast_producer is not None:
                    fast_producer.close()
                for d in slow:
                    d.close()
                return
            started = time.monotonic()
            parsed = parse_chunk(
                item.data, layout, item.start_offset, item.start_row, item.start_line, item.spans,
                item.scan,
            )
            if pending is not None:
                finish(pending)
                pending = None
            if fast_producer is not None:
                fast_producer.produce_chunk(parsed.payload, parsed.starts, parsed.lens,
                                            parsed.key_buf, parsed.key_starts, parsed.key_lens)
            else:
                deliverer().produce_all(cfg.topic, parsed.values, parsed.keys)
            if parsed.bad and cfg.dead_letter_topic:
                for b in parsed.bad:
                    deliverer().produce_one(
                        cfg.dead_letter_topic,
                        b.raw,
                        None,
                        [
                            ("reason", b.reason.encode()),
                            ("line", str(b.line).encode()),
                            ("row", str(b.row).encode()),
                            ("source", layout.source_url.encode()),
                            ("offset", str(b.offset).encode()),
                        ],
                    )
            pending = _summary(index, item, parsed, started)
            del parsed, item
    finally:
        # Any way out (a stop, a Kafka failure, a crash): librdkafka must be gone before
        # the buffers its queued messages point into are freed (values are not copied).
        if fast_producer is not None:
            fast_producer.close(abort=True)


def _summary(index: int, chunk: Chunk, parsed: ParsedChunk, started: float) -> ChunkResult:
    return ChunkResult(
        seq=chunk.seq,
        worker=index,
        rows_read=parsed.rows_read,
        rows_published=len(parsed),
        bad=[BadRowReport(b.line, b.row, b.offset, b.reason) for b in parsed.bad],
        fast=parsed.fast,
        seconds=started,  # replaced by the duration once acknowledged
    )


class WorkerProcess:
    """A worker launched as a plain child interpreter with two pipes.

    Not multiprocessing: its spawn start method starts a semaphore-tracker process and re-imports
    the program's __main__ (the CLI and all its imports) in every worker, ~100 MB of RSS that buys
    nothing here. The pipes still carry pickled objects through multiprocessing's Connection.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"csv-ingest-worker-{index}"
        c_in_r, c_in_w = os.pipe()
        c_out_r, c_out_w = os.pipe()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, [env.get("PYTHONPATH")])]
        )
        code = "from ingest_worker.pool import worker_entry; worker_entry()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(index), str(c_in_r), str(c_out_w), str(os.getpid())],
            pass_fds=(c_in_r, c_out_w),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(c_in_r)
        os.close(c_out_w)
        self.to_worker = Connection(c_in_w, readable=False)
        self.from_worker = Connection(c_out_r, writable=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class QueueChannel:
    """A :class:`Channel` over a queue, for worker threads."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        self.q = q
        self._next: list[Any] = []

    def poll(self, timeout: float | None = 0.0) -> bool:
        if self._next:
            return True
        try:
            self._next.append(self.q.get(timeout=timeout))
        except queue.Empty:
            return False
        return True

    def recv(self) -> Any:
        if self._next:
            return self._next.pop()
        return self.q.get()

    def send(self, obj: Any) -> None:
        self.q.put(obj)


class WorkerThread:
    """A worker in this process: polars and librdkafka work outside the GIL, so threads overlap
    parsing, producing and reading on several cores without a second copy of polars in memory."""

    def __init__(self, index: int, out_q: queue.Queue[Any]) -> None:
        self.index = index
        self.name = f"csv-ingest-worker-{index}"
        self.in_q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.out_q = out_q
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.exitcode: int | None = None

    def configure(self, cfg: WorkerConfig) -> None:
        self.thread = threading.Thread(target=self._main, args=(cfg,), name=self.name, daemon=True)
        self.thread.start()

    def _main(self, cfg: WorkerConfig) -> None:
        try:
            _run(self.index, cfg, QueueChannel(self.in_q), QueueChannel(self.out_q),
                 self.stop.is_set)
            self.exitcode = 0
        except InterruptedError:
            self.exitcode = 0
        except Exception as e:
            from ingest_worker.producer import KafkaUnavailable

            self.exitcode = 1
            kafka = isinstance(e, KafkaUnavailable)
            msg = str(e) if kafka else f"worker {self.index} crashed: {e!r}"
            log_exc = traceback.format_exc()
            msg = msg if kafka else f"{msg}\n{log_exc}"
            self.out_q.put(WorkerFailure(self.index, msg, kafka))

    def is_alive(self) -> bool:
        return self.thread is None or self.thread.is_alive()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def kill(self) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Full):
            self.in_q.put_nowait(None)


def worker_entry() -> None:
    """``python -c`` entry of a worker: argv is index, pipe fds, parent pid."""
    index, fd_in, fd_out, parent = (int(x) for x in sys.argv[1:5])
    worker_main(index, Connection(fd_in, writable=False), Connection(fd_out, readable=False),
                parent)
