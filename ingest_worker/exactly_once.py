"""Exactly-once delivery (``spec.kafka.delivery: exactlyOnce``), as Kafka Connect's KIP-618 does
it for source connectors: one Kafka transaction per checkpoint interval, holding the interval's
rows, its dead letters and its checkpoint record (:mod:`ingest_worker.kafka.offsets`).

- :class:`Transactions` is one unit's transactional session, across the passes of a run: its
  producer, made (``init_transactions``: every older producer of the unit's transactional id is
  fenced and its open transaction completed) before the checkpoint is read; the rows the broker
  refused in an aborted transaction, withheld from the next pass and dead-lettered instead; and
  the retry budget, counted from the last commit.
- :class:`TxnSender` is one pass's delivery: the chunks are encoded in parallel (the compiled
  encoder releases the GIL), and one thread sends them in file order through the transactional
  producer and commits every interval. It reports chunks to the run only once committed, so the
  status the run writes mirrors Kafka and is never ahead of it.

Any failure inside a transaction aborts it and the run resumes from the last commit (a new
pass, with a new producer: librdkafka lacks KIP-890, so even a timed-out commit is not
retried). A fenced producer means another attempt owns the unit: the pass yields.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ingest_worker.api.spec import CsvIngestionSpec
from ingest_worker.checkpoint import Checkpoint, CheckpointStore, ChunkDone, Watermark
from ingest_worker.csv.chunks import Chunk
from ingest_worker.csv.encode import ChunkEncoder, Encoded
from ingest_worker.exitcodes import EXIT_FENCED
from ingest_worker.kafka.offsets import (
    CheckpointKey,
    KafkaCheckpointStore,
    OffsetsReader,
    TopicLimits,
    checkpoint_record,
    ensure_offsets_topic,
    partition_for,
    topic_limits,
)
from ingest_worker.kafka.producer import (
    KafkaUnavailable,
    ProducerFenced,
    Refusal,
    RowProducer,
    producer_config,
)
from ingest_worker.workers import (
    ChunkResult,
    Worker,
    WorkerConfig,
    WorkerFailure,
    set_aside_refused,
)

log = logging.getLogger("ingest_worker")

KEYLESS = (87, "Broker: Broker failed to validate record (a compacted topic takes no record "
               "without a key)")
"""Why a compacted topic refuses a row without a key (Kafka's INVALID_RECORD)."""

TXN_CHUNKS = 16
"""Chunks per transaction at most (chunks are cut at everyRows / TXN_CHUNKS rows, and at the
1 MiB read block). A commit first waits for every row of its transaction (measured: half of a
sender's time, with 8 chunks), so transactions are large and the reader's window holds three:
the next two are read and encoded while one commits (bench/README.md, exactly-once)."""
WINDOW_TRANSACTIONS = 3
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
"""Under the broker's transaction.max.timeout.ms (15 minutes by default)."""
INIT_TIMEOUT_S = 30.0
ABORT_TIMEOUT_S = 5.0


def transactional_config(spec: CsvIngestionSpec, transactional_id: str) -> dict[str, Any]:
    """The producer configuration of a unit's transactional producer."""
    kafka = spec.kafka
    conf = producer_config(kafka.bootstrap_servers, kafka.retry_budget_seconds,
                           kafka.producer_properties)
    conf["transactional.id"] = transactional_id
    conf.setdefault("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
    # librdkafka refuses a message timeout longer than the transaction's.
    conf["message.timeout.ms"] = min(int(conf["message.timeout.ms"]),
                                     int(conf["transaction.timeout.ms"]))
    return conf


@dataclass
class Transactions:
    """One unit's transactional session, across the passes of its run."""

    spec: CsvIngestionSpec
    key: CheckpointKey
    writer: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}")
    producer: RowProducer | None = None
    partitions: int = 0
    withheld: dict[int, tuple[int, str]] = field(default_factory=dict)
    """Byte offset -> (Kafka error code, reason) of rows the broker refused."""
    last_progress: float = field(default_factory=time.monotonic)
    rewinds: int = 0
    commits: int = 0
    limits: TopicLimits | None = None

    def __post_init__(self) -> None:
        self.config = transactional_config(self.spec, self.key.transactional_id)
        self.timeout_s = int(self.config["transaction.timeout.ms"]) / 1000
        self.budget_s = float(self.spec.kafka.retry_budget_seconds)
        self.reader = OffsetsReader(self.spec.kafka, min(30.0, self.budget_s),
                                    wait_stable_s=self.timeout_s + 10)

    @property
    def interval_s(self) -> float:
        """A transaction commits at least this often: never near its timeout."""
        return min(float(self.spec.checkpoint.every_seconds), self.timeout_s / 2)

    def store(self, inner: CheckpointStore) -> KafkaCheckpointStore:
        return KafkaCheckpointStore(inner, self.reader, self.key)

    def open(self, check_topics: bool) -> RowProducer:
        """A new producer for the next pass, with every older one of the unit fenced."""
        kafka = self.spec.kafka
        started = time.monotonic()
        if check_topics:
            ensure_offsets_topic(kafka, min(30.0, self.budget_s))
        if self.limits is None:
            self.limits = topic_limits(kafka, min(30.0, self.budget_s))
            self._fit_batches_to_the_topic(self.limits)
        self.partitions = self.reader.partitions()
        checked = time.monotonic()
        producer = RowProducer(self.config, kafka.topic, self.budget_s)
        try:
            # Connected first: librdkafka looks the coordinator up at once, and retries only
            # half a second later when no broker connection is up yet.
            producer.warm_up()
            producer.init_transactions(max(5.0, min(INIT_TIMEOUT_S, self.budget_s)))
        except BaseException:
            producer.close(abort=True)
            raise
        self.producer = producer
        log.debug("Transactional producer ready", extra={
            "transactional_id": self.key.transactional_id,
            "topics_s": round(checked - started, 3),
            "init_s": round(time.monotonic() - checked, 3)})
        return producer

    def _fit_batches_to_the_topic(self, limits: TopicLimits) -> None:
        """Batches no larger than the topic takes. The broker refuses a batch over the topic's
        max.message.bytes as a whole, with no word of which row is too large, and inside a
        transaction that dooms it; bounded so, a row too large is refused by the client's own
        check, at once and alone, and dead-lettered without touching the transaction."""
        limit = limits.max_message_bytes
        if limit is None:
            return
        for key, default in (("message.max.bytes", 1_000_000), ("batch.size", 1_000_000)):
            if int(self.config.get(key, default)) > limit:
                self.config[key] = limit

    def committed(self) -> None:
        self.commits += 1
        self.last_progress = time.monotonic()

    def record(self, cp: Checkpoint) -> tuple[int, bytes, bytes]:
        """(partition, key, value) of the offsets topic's record for ``cp``."""
        key, value = checkpoint_record(self.key, cp, self.writer)
        return partition_for(self.key, self.partitions), key, value

    def close(self) -> None:
        """Ends the pass's producer, aborting its open transaction if it has one (best effort:
        the next producer's ``init_transactions`` aborts it anyway)."""
        producer, self.producer = self.producer, None
        if producer is None:
            return
        try:
            producer.abort_transaction(ABORT_TIMEOUT_S)
        except (KafkaUnavailable, InterruptedError) as e:
            log.debug("abort_transaction: %s", e)
        producer.close(abort=True)

    def rewind(self, why: str, refusals: tuple[Refusal, ...]) -> str | None:
        """After a failed transaction: withholds the refused rows, waits a backoff; returns
        why to give up instead (the retry budget is spent), or None to start the next pass."""
        self.close()
        if len(refusals) > 1:
            # Refused as a whole request: librdkafka reports every row of it alike, and a row
            # sent again would doom the next transaction too (at-least-once isolates it).
            lines = sorted(r[1] for r in refusals)
            return (f"Kafka refused a request of {len(refusals)} rows (lines {lines[0]}-"
                    f"{lines[-1]}) as a whole inside a transaction: {refusals[0][4]}. "
                    "Exactly-once cannot tell the bad row from the others; ingest the file "
                    "with delivery atLeastOnce, which sends them again one by one")
        for _row, _line, offset, code, reason in refusals:
            self.withheld[offset] = (code, reason)
        stalled = time.monotonic() - self.last_progress
        if stalled > self.budget_s:
            return f"Kafka transactions failing for {stalled:.0f}s: {why}"
        self.rewinds += 1
        cap = min(30.0, 0.5 * 2 ** min(self.rewinds, 8), self.budget_s - stalled)
        log.warning("Transaction aborted, resuming from the last commit: %s", why,
                    extra={"rewinds": self.rewinds, "withheld": len(self.withheld)})
        time.sleep(random.uniform(0, max(0.0, cap)))
        return None


class TxnSender(Worker):
    """One pass's delivery: encoders in parallel, this thread sending in file order through
    the unit's transactional producer, one transaction per interval, reported once committed."""

    def __init__(self, cfg: WorkerConfig, results: queue.Queue[Any], txn: Transactions,
                 producer: RowProducer, start: Checkpoint, encoders: int,
                 stop_requested: threading.Event) -> None:
        self.txn, self.txn_producer, self.stop_requested = txn, producer, stop_requested
        self.wm = Watermark(start)
        self.pool = ThreadPoolExecutor(encoders, thread_name_prefix="csv-encode")
        self._local = threading.local()
        self.began: float | None = None
        self.open_rows = 0
        self.open_chunks: list[tuple[Chunk, ChunkResult]] = []
        self._sent: dict[int, Any] = {}
        super().__init__(0, cfg, results, inbox_size=WINDOW_TRANSACTIONS * TXN_CHUNKS + 1)

    def _main(self) -> None:
        try:
            self._loop()
        except InterruptedError:
            pass
        except ProducerFenced as e:
            own = self.began is not None and \
                time.monotonic() - self.began >= 0.9 * self.txn.timeout_s
            if own:  # our own transaction timed out (the broker fenced the stalled epoch)
                self._failed(f"the transaction timed out: {e}")
            else:
                self.results.put(WorkerFailure(self.index, (
                    f"fenced: another attempt of this unit took over ({e})"), EXIT_FENCED))
        except KafkaUnavailable as e:  # a transaction's failure, or Kafka's past the budget
            self._failed(str(e))
        except Exception as e:
            self.results.put(WorkerFailure(self.index, f"sender crashed: {e!r}"))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _failed(self, why: str) -> None:
        self.results.put(WorkerFailure(self.index, why, rewind=True,
                                       refusals=tuple(self.txn_producer.take_txn_refusals())))

    def _encode(self, chunk: Chunk) -> Encoded:
        encoder = getattr(self._local, "encoder", None)
        if encoder is None:
            encoder = self._local.encoder = ChunkEncoder(self.cfg.layout)
        return encoder.encode(chunk)

    def _loop(self) -> None:
        producer = self.txn_producer
        with self._producer_lock:
            self.producer = producer
        pending: deque[tuple[Chunk, Future[Encoded]]] = deque()
        ended = False
        while not self.stopping.is_set():
            try:
                item = self.inbox.get(timeout=0.002 if pending or self._sent else 0.05)
                while True:
                    if item is None:
                        ended = True
                    else:
                        pending.append((item, self.pool.submit(self._encode, item)))
                    item = self.inbox.get_nowait()
            except queue.Empty:
                pass
            while pending and pending[0][1].done():
                chunk, future = pending.popleft()
                self._send_chunk(producer, chunk, future.result())
            if self._sent:
                self._report(producer, producer.poll(0), self._sent)
            if ended and not pending:
                self._commit(producer, done=True)
                return
            if self._due():
                self._commit(producer)

    def _send_chunk(self, producer: RowProducer, chunk: Chunk, encoded: Encoded) -> None:
        if self.began is None:
            producer.begin_transaction()
            self.began = time.monotonic()
        if self.txn.limits is not None and self.txn.limits.compacted:
            held = encoded.batch.withhold_keyless()
            if held:
                self._refused(chunk, encoded, held, lambda _offset: KEYLESS)
        if self.txn.withheld:
            held = encoded.batch.withhold({o for o in self.txn.withheld
                                           if chunk.start_offset <= o < chunk.end_offset})
            if held:
                self._refused(chunk, encoded, held, self.txn.withheld.__getitem__)
        self.open_rows += encoded.rows_read
        self._send(producer, chunk, encoded, time.monotonic(), self._sent)

    def _refused(self, chunk: Chunk, encoded: Encoded, held: list[tuple[int, int, int]],
                 why: Callable[[int], tuple[int, str]]) -> None:
        """Sets the ``held`` rows aside in ``encoded``'s batch, refused by Kafka for
        ``why(offset)``: (error code, reason)."""
        for row, line, offset in held:
            set_aside_refused(encoded.batch, chunk, self.cfg.layout,
                              (row, line, offset, *why(offset)))

    def _due(self) -> bool:
        if self.began is None:
            return False
        return (self.open_rows >= self.txn.spec.checkpoint.every_rows
                or len(self.open_chunks) + len(self._sent) >= TXN_CHUNKS
                or time.monotonic() - self.began >= self.txn.interval_s
                or self.stop_requested.is_set())

    def _finished(self, chunk: Chunk, result: ChunkResult) -> None:
        """Acknowledged, not yet committed: held until the transaction commits."""
        self.open_chunks.append((chunk, result))

    def _commit(self, producer: RowProducer, done: bool = False) -> None:
        """Ends the open transaction: waits for its chunks, adds the checkpoint record past
        them, commits, and reports the chunks."""
        if self.began is None:
            producer.begin_transaction()
            self.began = time.monotonic()
        flushing = time.monotonic()
        while self._sent:
            self._report(producer, producer.flush(), self._sent)
        for chunk, r in sorted(self.open_chunks, key=lambda x: x[1].seq):
            self.wm.finish(ChunkDone(r.seq, chunk.end_offset, chunk.end_row, chunk.end_line,
                                     r.rows_read, r.rows_published, len(r.bad), len(chunk.data)))
        cp = replace(self.wm.checkpoint, done=done)
        partition, key, value = self.txn.record(cp)
        producer.send_record(self.txn.spec.kafka.offsets_topic, partition, key, value)
        committing = time.monotonic()
        producer.commit_transaction(self.txn.timeout_s)
        self.txn.committed()
        now = time.monotonic()
        log.debug("Transaction committed", extra={
            "rows": self.open_rows, "chunks": len(self.open_chunks), "byte_offset": cp.byte_offset,
            "open_s": round(now - self.began, 3), "flush_s": round(committing - flushing, 3),
            "commit_s": round(now - committing, 3)})
        for _, r in sorted(self.open_chunks, key=lambda x: x[1].seq):
            self.results.put(r)
        self.open_chunks = []
        self.began = None
        self.open_rows = 0
