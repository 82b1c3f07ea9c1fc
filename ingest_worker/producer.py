"""The Kafka side of a worker process: produce a chunk, know when all of it is acknowledged.

No per-message success callbacks: they cost as much as the rest of the produce path (see
PERF-NOTES). Delivery reports are error-only, and a chunk counts as acknowledged when ``flush()``
returned 0 and no error was reported for it. Failed messages are re-produced, the same bytes,
with exponential backoff and jitter, until the retry budget is spent.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# Throughput defaults (see bench/README.md); user properties override. On loopback no
# compression is fastest (CPU is the limit), but lz4 is the default for real networks, where
# JSON shrinks 3-5x for little CPU; zstd costs more CPU than it saves here.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    # flush() at each chunk end sends at once; linger only shapes batches within a chunk.
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    # Bounded: a worker holds at most about one chunk in the queue (it flushes per chunk).
    "queue.buffering.max.kbytes": 32 * 1024,
    "queue.buffering.max.messages": 200_000,
    "delivery.report.only.error": True,
    # The Java client's partitioner: a key lands where Streams, Connect or a Java producer put it.
    "partitioner": "murmur2_random",
}
MESSAGE_TIMEOUT_CAP_S = 60


class KafkaUnavailable(Exception):
    """Delivery kept failing for the whole retry budget, or failed permanently."""


def producer_config(
    bootstrap_servers: str,
    retry_budget_s: float,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The producer configuration: defaults, then the user's properties on top."""
    conf = dict(DEFAULT_PRODUCER_CONFIG)
    conf["bootstrap.servers"] = bootstrap_servers
    # librdkafka retries internally for message.timeout.ms; beyond that the app re-produces,
    # so a long budget never leaves a message stuck in one attempt.
    conf["message.timeout.ms"] = int(min(retry_budget_s, MESSAGE_TIMEOUT_CAP_S) * 1000)
    conf.update(overrides or {})
    return conf


@dataclass
class _Failure:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Any
    error: KafkaError


class AckWaiter:
    """The wait for acknowledgements, shared by both producers (confluent-kafka and ctypes).

    Waits while the broker makes progress; re-produces failed messages with exponential
    backoff and jitter; raises :class:`KafkaUnavailable` when nothing succeeded for the whole
    retry budget or a failure is permanent. Subclasses supply the queue operations.
    """

    failures: list[Any]
    last_error: str
    retry_budget_s: float
    should_stop: Callable[[], bool]

    def _queued(self) -> int:
        raise NotImplementedError

    def _flush_for(self, seconds: float) -> None:
        raise NotImplementedError

    def _poll_for(self, seconds: float) -> None:
        raise NotImplementedError

    def _check_fatal(self) -> None:
        raise NotImplementedError

    def _permanent_error(self, failed: list[Any]) -> str | None:
        """A message for the first failure that retrying cannot cure, if any."""
        raise NotImplementedError

    def _reproduce(self, failed: list[Any]) -> None:
        raise NotImplementedError

    def flush_all(self) -> None:
        """Returns once every message produced so far is acknowledged."""
        last_progress = time.monotonic()
        attempt = 0
        while True:
            before = self._queued()
            failed_before = len(self.failures)
            self._flush_for(1.0)
            remaining = self._queued()
            self._check_fatal()
            # Progress means acknowledgements, not messages leaving the queue as failures.
            if before - remaining > len(self.failures) - failed_before:
                last_progress = time.monotonic()
            if remaining == 0 and not self.failures:
                return
            if self.failures:
                failed, self.failures = self.failures, []
                permanent = self._permanent_error(failed)
                if permanent is not None:
                    raise KafkaUnavailable(permanent)
                attempt += 1
                self._sleep_backoff(attempt, last_progress)
                self._reproduce(failed)
                continue
            stalled = time.monotonic() - last_progress
            if stalled > self.retry_budget_s:
                why = self.last_error or "no acknowledgements"
                raise KafkaUnavailable(f"Kafka unavailable for {stalled:.0f}s: {why}")
            if self.should_stop():
                raise InterruptedError("stopping")

    def _sleep_backoff(self, attempt: int, last_progress: float) -> None:
        deadline = backoff_deadline(attempt, last_progress, self.retry_budget_s, self.last_error)
        while (left := deadline - time.monotonic()) > 0:
            self._poll_for(min(left, 0.2))
            if self.should_stop():
                raise InterruptedError("stopping")


@dataclass
class Deliverer(AckWaiter):
    """One producer and the bookkeeping to know that everything given to it was acknowledged."""

    config: dict[str, Any]
    retry_budget_s: float
    should_stop: Callable[[], bool] = lambda: False
    producer: Producer = field(init=False)
    failures: list[_Failure] = field(default_factory=list, init=False)
    last_error: str = field(default="", init=False)
    fatal_error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._make_producer()

    def _make_producer(self) -> None:
        conf = dict(self.config)
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self.producer = Producer(conf)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # only errors are reported (delivery.report.only.error)
            self.failures.append(_Failure(msg.topic() or "", msg.value(), msg.key(),
                                          msg.headers(), err))
            self.last_error = err.str()

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        if err.fatal():
            self.fatal_error = err.str()

    # --- producing ------------------------------------------------------------------------------

    def produce_all(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[str | bytes] | None,
    ) -> None:
        """Hands every message to librdkafka, waiting (never dropping) when its queue is full."""
        produce = self.producer.produce
        poll = self.producer.poll
        n = len(values)
        i = 0
        # The hot loop: a plain produce per row; BufferError is the only way out of it.
        while i < n:
            try:
                if keys is None:
                    for i in range(i, n):  # noqa: B020
                        produce(topic, values[i])
                else:
                    for i in range(i, n):  # noqa: B020
                        produce(topic, values[i], keys[i])
                i = n
            except BufferError:
                self._wait_for_room()
                # retry the same record i
            poll(0)

    def produce_one(
        self, topic: str, value: bytes | None, key: str | bytes | None, headers: Any = None
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        """The local queue is full: serve delivery reports until it drains a little."""
        start = time.monotonic()
        before = len(self.producer)
        failed_before = len(self.failures)
        while True:
            self.producer.poll(0.05)
            self._check_fatal()
            now_len = len(self.producer)
            if now_len == 0 or (before - now_len > len(self.failures) - failed_before):
                return  # room made by acknowledgements, not by messages timing out
            if time.monotonic() - start > self.retry_budget_s:
                why = self.last_error or "no progress"
                raise KafkaUnavailable(f"Kafka unavailable for {self.retry_budget_s:.0f}s: {why}")
            if self.should_stop():
                raise InterruptedError("stopping")

    def _check_fatal(self) -> None:
        if self.fatal_error is not None:
            raise KafkaUnavailable(f"fatal producer error: {self.fatal_error}")

    # --- acknowledging --------------------------------------------------------------------------

    # --- AckWaiter hooks ------------------------------------------------------------------------

    def _queued(self) -> int:
        return len(self.producer)

    def _flush_for(self, seconds: float) -> None:
        self.producer.flush(seconds)

    def _poll_for(self, seconds: float) -> None:
        self.producer.poll(seconds)

    def _permanent_error(self, failed: list[Any]) -> str | None:
        for f in failed:
            if not _retriable(f.error):
                return f"delivery to {f.topic} failed permanently: {f.error.str()}"
        return None

    def _reproduce(self, failed: list[Any]) -> None:
        for f in failed:
            self.produce_one(f.topic, f.value, f.key, f.headers)

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(KafkaException):
            self.producer.flush(timeout)


def backoff_deadline(
    attempt: int, last_progress: float, budget_s: float, last_error: str | None
) -> float:
    """When the next retry may go: exponential backoff with full jitter (0..cap), so processes
    retrying together do not stampede the broker. Raises once ``budget_s`` has passed without
    an acknowledgement."""
    elapsed = time.monotonic() - last_progress
    if elapsed > budget_s:
        raise KafkaUnavailable(
            f"Kafka unavailable for {elapsed:.0f}s: {last_error or 'delivery failed'}"
        )
    cap = min(30.0, 0.5 * 2**attempt, budget_s - elapsed)
    return time.monotonic() + random.uniform(0, max(cap, 0.0))


def _retriable(err: KafkaError) -> bool:
    if err.retriable():
        return True
    # Timeouts and transport errors mean "not delivered yet", not "never deliverable".
    return err.code() in (
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,
    )
