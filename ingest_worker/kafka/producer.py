"""The one producer path for rows: batches to the compiled core's librdkafka producer.

Every delivery report is counted in the core, against its batch, with no Python per message
(a Python callback per message would cost as much as the rest of the produce path, see
PERF-NOTES); ``poll`` returns the batches whose every row is acknowledged, so a worker streams
without stopping to flush. Failures retrying can cure are re-sent, the same bytes to the same
partition, with exponential backoff and jitter, until the retry budget is spent
(``KafkaUnavailable``). A batch's bad rows go with it, as dead letters, and it completes once
they are acknowledged too. A row Kafka refuses on its own (too large, invalid for the topic)
comes back with its batch as a refusal, to be set aside in a batch of its own;
``core/src/producer.rs`` has the whole policy.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from csvkafka_core import Batch, KafkaUnavailable, Producer, ProducerFenced, TransactionFailed

from ingest_worker.kafka.deadletter import DEFAULT_MAX_BYTES, value_room

__all__ = ["BLACK_HOLE_DETECTION_S", "DEFAULT_PRODUCER_CONFIG", "KafkaUnavailable",
           "ProducerFenced", "ProducerPool", "Refusal", "RowProducer", "TransactionFailed",
           "producer_config"]

log = logging.getLogger("ingest_worker.kafka")

BLACK_HOLE_DETECTION_S = 15
"""Seconds after which a silent broker connection is given up (tests/faults/test_network.py)."""

# Throughput defaults (bench/README.md); the user's producerProperties override them.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # lz4: on a real network JSON shrinks 3-5x on the wire and on disk for little CPU; zstd
    # stores less but costs more CPU (bench/README.md, compression).
    "compression.type": "lz4",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    # Bounded: the run's window holds a few chunks per worker anyway.
    "queue.buffering.max.kbytes": 32 * 1024,
    "queue.buffering.max.messages": 200_000,
    # The Java client's partitioner: a key lands where Streams, Connect or a Java producer put it.
    "partitioner": "murmur2_random",
    # A connection that goes silent (a black-holed path: open, nothing comes back) is given up
    # when a request on it has waited this long, then reconnected; left to TCP it would take
    # the kernel's keepalive (hours). A healthy broker answers a produce in milliseconds.
    "socket.timeout.ms": BLACK_HOLE_DETECTION_S * 1000,
    "socket.connection.setup.timeout.ms": BLACK_HOLE_DETECTION_S * 1000,
}
MESSAGE_TIMEOUT_CAP_S = 60

Refusal = tuple[int, int, int, int, str]
"""A row Kafka refused: (row within its chunk, line, offset, Kafka error code, reason)."""
Completed = tuple[int, list[Refusal]]
"""A batch whose rows are all acknowledged or refused: (its id, the refusals)."""


def producer_config(
    bootstrap_servers: str,
    retry_budget_s: float,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The producer configuration: defaults, then the user's properties on top."""
    conf = dict(DEFAULT_PRODUCER_CONFIG)
    conf["bootstrap.servers"] = bootstrap_servers
    # librdkafka retries internally for message.timeout.ms; beyond that the producer re-sends,
    # so a long budget never leaves a message stuck in one attempt.
    conf["message.timeout.ms"] = int(min(retry_budget_s, MESSAGE_TIMEOUT_CAP_S) * 1000)
    conf.update(overrides or {})
    return conf


def _text(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


class RowProducer:
    """One topic's producer, used by one worker thread (``stop`` from any thread)."""

    def __init__(self, config: dict[str, Any], topic: str, retry_budget_s: float) -> None:
        settings = [(k, _text(v)) for k, v in config.items()
                    if isinstance(v, (str, int, float, bool))]
        self.core = Producer(settings, topic, retry_budget_s)
        self.max_message_bytes = int(config.get("message.max.bytes", DEFAULT_MAX_BYTES))

    def warm_up(self) -> None:
        """Connects now (the broker's first answer takes tens of milliseconds), so that the
        first send does not wait for it."""
        self.core.warm_up()

    def send(self, batch: Batch, dead_letter_topic: str | None = None,
             source_url: str = "") -> int:
        """Hands the batch to librdkafka (waiting while its queue is full), its bad rows as dead
        letters (see :mod:`ingest_worker.kafka.deadletter`) to ``dead_letter_topic`` when given,
        and returns its id. The batch is the producer's from here on."""
        try:
            return self.core.send(batch, dead_letter_topic, source_url.encode(),
                                  value_room(self.max_message_bytes))
        finally:
            self._forward_logs()

    def poll(self, timeout_s: float) -> list[Completed]:
        """The batches that completed, waiting up to ``timeout_s`` for reports."""
        try:
            return self.core.poll(int(timeout_s * 1000))
        finally:
            self._forward_logs()

    def flush(self) -> list[Completed]:
        """Returns once every batch sent is complete, with those that completed meanwhile."""
        try:
            return self.core.flush()
        finally:
            self._forward_logs()

    # --- exactly-once: one transaction per checkpoint interval (see ingest_worker.exactly_once)

    def init_transactions(self, timeout_s: float) -> None:
        """Fences every older producer of this transactional id and completes its open
        transaction."""
        try:
            self.core.init_transactions(int(timeout_s * 1000))
        finally:
            self._forward_logs()

    def begin_transaction(self) -> None:
        self.core.begin_transaction()

    def send_record(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """A record of the open transaction that no batch waits for (its checkpoint)."""
        try:
            self.core.send_record(topic, partition, key, value)
        finally:
            self._forward_logs()

    def commit_transaction(self, timeout_s: float) -> list[Completed]:
        """Waits for every batch, then commits; returns the batches completed meanwhile."""
        try:
            return self.core.commit_transaction(int(timeout_s * 1000))
        finally:
            self._forward_logs()

    def abort_transaction(self, timeout_s: float) -> None:
        try:
            self.core.abort_transaction(int(timeout_s * 1000))
        finally:
            self._forward_logs()

    def take_txn_refusals(self) -> list[Refusal]:
        """The rows the broker refused in the transaction that failed."""
        return self.core.take_txn_refusals()

    def fault_seconds(self) -> float:
        """Seconds spent in Kafka faults so far (see ``ingest_csv_kafka_retry_seconds``)."""
        return self.core.fault_seconds()

    def stop(self) -> None:
        """Makes a blocked send or flush raise InterruptedError."""
        self.core.request_stop()

    def close(self, abort: bool = False) -> None:
        self.core.close(abort)

    def _forward_logs(self) -> None:
        for level, text in self.core.take_logs():
            log.log(logging.ERROR if level <= 3 else logging.WARNING if level == 4 else
                    logging.INFO if level <= 6 else logging.DEBUG, text)


class ProducerPool:
    """Idle producers of one topic and configuration, kept between the runs of one process.

    A pod that runs many work units one after the other takes its producers from here: a
    librdkafka producer costs a connection and, idempotent, a producer id, which the broker
    gives after about half a second (measured: 0.51 s to the first acknowledgement, 0.003 s
    without idempotence). Paid per file, that is most of a small file's time. Only a producer
    whose every batch completed comes back; one stopped or failed is closed.
    """

    def __init__(self, config: dict[str, Any], topic: str, retry_budget_s: float) -> None:
        self.config, self.topic, self.retry_budget_s = config, topic, retry_budget_s
        self._idle: list[RowProducer] = []
        self._lock = threading.Lock()

    def take(self) -> RowProducer:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return RowProducer(self.config, self.topic, self.retry_budget_s)

    def give(self, producer: RowProducer) -> None:
        with self._lock:
            self._idle.append(producer)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for producer in idle:
            producer.close()
