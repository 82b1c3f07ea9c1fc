"""The workers: threads that encode chunks, send them, and report each once acknowledged.

The compiled core releases the GIL while it encodes, produces and waits for acknowledgements,
so P worker threads use P cores in one process. Each worker owns one producer and streams: it
encodes and sends chunk after chunk, and reports each as the producer says its every row is
acknowledged (or refused and dead-lettered), with no flush between chunks. How many chunks are
in flight is the run's window, not the worker's.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from csvkafka_core import Batch, cut

from ingest_worker.badrows import BadRows, pod_budget
from ingest_worker.csv.chunks import Chunk
from ingest_worker.csv.dialect import Layout, strip_eol
from ingest_worker.csv.encode import ChunkEncoder, Encoded, bad_rows
from ingest_worker.exitcodes import EXIT_KAFKA
from ingest_worker.kafka.producer import (
    Completed,
    KafkaUnavailable,
    ProducerPool,
    Refusal,
    RowProducer,
)

log = logging.getLogger("ingest_worker")


@dataclass(frozen=True)
class WorkerConfig:
    layout: Layout
    topic: str
    dead_letter_topic: str | None
    producer_config: dict[str, Any]
    retry_budget_s: float
    producers: ProducerPool | None = None
    """Where the producers come from and go back to when the run ends well (a pod's run of
    many units); None: each worker makes its own and closes it."""
    every_bad_row: bool = False
    """Every bad row is reported as a row (an errors log writes them all); otherwise only as
    many as the pod's log still writes one by one, and the rest counted."""

    def bad_rows_wanted(self) -> int | None:
        return None if self.every_bad_row else max(0, pod_budget().left)


@dataclass(frozen=True)
class ChunkResult:
    """A chunk whose rows are all acknowledged by Kafka or set aside as bad rows."""

    seq: int
    worker: int
    rows_read: int
    rows_published: int
    bad: BadRows
    seconds: float
    kafka_fault_s: float = 0.0
    """Seconds this worker's producer spent in Kafka faults since its previous report."""


@dataclass(frozen=True)
class WorkerFailure:
    """A worker stopped for good: Kafka failed past the retry budget, or a bug."""

    worker: int
    message: str
    exit_code: int = EXIT_KAFKA
    rewind: bool = False
    """Exactly-once: the transaction failed; the run resumes from the last commit."""
    refusals: tuple[Refusal, ...] = ()
    """Exactly-once: rows the broker refused in that transaction, to withhold next time."""


@dataclass
class _Sent:
    chunk: Chunk
    rows_read: int
    published: int
    bad: BadRows
    started: float


_IDLE = object()
"""No chunk came: serve the producer's reports only."""


def set_aside_refused(batch: Batch, chunk: Chunk, layout: Layout, refusal: Refusal) -> None:
    """Sets aside in ``batch`` a row whose message Kafka refused: its record, read back from
    the chunk."""
    row, line, offset, code, reason = refusal
    rel = offset - chunk.start_offset
    cuts = cut(chunk.data[rel:], layout.delimiter_byte, layout.quote_byte, True, 1, 1)
    end = cuts[0][0] if cuts else len(chunk.data) - rel
    raw = strip_eol(chunk.data[rel : rel + end])
    batch.set_aside(line, chunk.start_row + row, offset, f"refused by Kafka: {reason}", raw, code)


class Worker:
    """One worker thread: takes chunks from ``inbox`` (None: no more), reports to ``results``."""

    def __init__(self, index: int, cfg: WorkerConfig, results: queue.Queue[Any],
                 inbox_size: int = 1) -> None:
        self.index = index
        self.name = f"csv-ingest-worker-{index}"
        self.cfg = cfg
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=inbox_size)
        self.results = results
        self.stopping = threading.Event()
        self.producer: RowProducer | None = None
        self._producer_lock = threading.Lock()
        self._fault_reported = 0.0
        self.sent_any = False
        self.thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self._loop()
        except InterruptedError:
            pass
        except KafkaUnavailable as e:
            self.results.put(WorkerFailure(self.index, str(e)))
        except Exception as e:
            self.results.put(WorkerFailure(
                self.index, f"worker {self.index} crashed: {e!r}\n{traceback.format_exc()}"))

    def _loop(self) -> None:
        cfg = self.cfg
        encoder = ChunkEncoder(cfg.layout)
        producer = (cfg.producers.take() if cfg.producers is not None
                    else RowProducer(cfg.producer_config, cfg.topic, cfg.retry_budget_s))
        with self._producer_lock:
            self.producer = producer
        self._fault_reported = producer.fault_seconds()  # a pooled producer's past is not ours
        producer.warm_up()  # while the run checks the topics and reads the first block
        sent: dict[int, _Sent] = {}
        finished = False
        try:
            while not self.stopping.is_set():
                try:
                    # With chunks in flight, look for reports often; idle, wait for a chunk.
                    item: Chunk | object | None = self.inbox.get(timeout=0.005 if sent else 0.2)
                except queue.Empty:
                    item = _IDLE
                if item is None:  # no more chunks
                    # The run says so only once every chunk is reported; still, a refusal's
                    # dead letters go out in a batch of their own, to be waited for too.
                    while sent:
                        self._report(producer, producer.flush(), sent)
                    finished = True
                    return
                if isinstance(item, Chunk):
                    started = time.monotonic()
                    self._send(producer, item, encoder.encode(item), started, sent)
                if sent:
                    self._report(producer, producer.poll(0 if item is not _IDLE else 0.01), sent)
        finally:
            with self._producer_lock:  # stop() no longer reaches it
                self.producer = None
                reuse = finished and cfg.producers is not None and not self.stopping.is_set()
            if reuse:
                assert cfg.producers is not None
                cfg.producers.give(producer)  # idle: every batch it was given is complete
            else:
                # Any other way out: what is not acknowledged is dropped (the checkpoint does
                # not cover it), and librdkafka is gone before the batches it points into.
                producer.close(abort=True)

    def _send(self, producer: RowProducer, chunk: Chunk, encoded: Encoded, started: float,
              sent: dict[int, _Sent]) -> None:
        published = len(encoded)
        bad = encoded.bad(self.cfg.bad_rows_wanted())
        batch = self._send_batch(producer, encoded.batch)
        sent[batch] = _Sent(chunk, encoded.rows_read, published, bad, started)
        if not self.sent_any:
            self.sent_any = True
            log.debug("First batch sent", extra={"unix_time": time.time()})

    def _send_batch(self, producer: RowProducer, batch: Batch) -> int:
        """The batch's messages, and its bad rows to the dead-letter topic if there is one."""
        return producer.send(batch, self.cfg.dead_letter_topic or None, self.cfg.layout.source_url)

    def _report(self, producer: RowProducer, done: list[Completed],
                sent: dict[int, _Sent]) -> None:
        """Reports completed chunks. A chunk with refused rows first waits for their dead
        letters, carried by an empty batch of its own."""
        for batch, refused in done:
            s = sent.pop(batch)
            if refused:
                carrier = Batch.from_messages([], None, [], [], [], 0)
                for r in refused:
                    set_aside_refused(carrier, s.chunk, self.cfg.layout, r)
                extra = bad_rows(carrier)
                sent[self._send_batch(producer, carrier)] = _Sent(
                    s.chunk, s.rows_read, s.published - len(refused), s.bad.merged(extra),
                    s.started)
                continue
            fault = producer.fault_seconds()
            self._finished(s.chunk, ChunkResult(s.chunk.seq, self.index, s.rows_read,
                                                s.published, s.bad, time.monotonic() - s.started,
                                                fault - self._fault_reported))
            self._fault_reported = fault

    def _finished(self, chunk: Chunk, result: ChunkResult) -> None:
        """A chunk's every row is acknowledged or set aside: reported to the run."""
        self.results.put(result)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        """Stops at once: a blocked send or flush returns, nothing more is taken."""
        self.stopping.set()
        with self._producer_lock:
            if self.producer is not None:
                self.producer.stop()
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(None)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
