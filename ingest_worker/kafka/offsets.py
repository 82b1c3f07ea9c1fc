"""Exactly-once: the offsets topic, where each transaction commits its checkpoint with its rows.

One compacted topic (``spec.kafka.offsetsTopic``) holds one record per commit, keyed by
ingestion and work unit, whose value is the unit's checkpoint as of that commit: the source
version, the byte offset, the line and row, and the counters (the same JSON as in status), with
the restart generation it belongs to. Compaction keeps the last record per key, which is the one
a resumed attempt reads, with ``read_committed``: a checkpoint whose transaction was aborted is
never seen, so the resume point is always the end of the last committed transaction.

The record goes to the partition the Java client's default partitioner would pick for its key
(murmur2), named explicitly, so a reader reads that one partition only.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ConfigResource,
    OffsetSpec,
    ResourceType,
)
from csvkafka_core import partition_of

from ingest_worker.api.spec import Kafka, TopicCreation
from ingest_worker.checkpoint.model import Checkpoint, Outcome
from ingest_worker.checkpoint.store import CheckpointStore
from ingest_worker.kafka import TopicError
from ingest_worker.kafka.topics import Admin, admin_config

log = logging.getLogger(__name__)

OFFSETS_PARTITIONS = 6
"""Partitions of a created offsets topic: units spread over them, and a reader reads one."""
REQUIRED_POLICY = "compact"


@dataclass(frozen=True)
class CheckpointKey:
    """Which unit of which ingestion a transactional producer owns, and where its checkpoints go."""

    transactional_id: str
    """Stable across the attempts of one ingestion's unit; derived from the resource's uid, so a
    re-created ingestion never resumes the old one's checkpoint."""
    key: str
    """The offsets topic's record key."""
    restart: int = 0
    """The run's restart generation (spec.restart): a checkpoint of an earlier one is stale."""

    @classmethod
    def of_ingestion(cls, namespace: str, name: str, uid: str, restart: int) -> CheckpointKey:
        """A CsvIngestion's: its transactional id is derived from its uid."""
        return cls(f"csvkafka-{uid}", f"{namespace}/{name}/{uid}", restart)

    def for_unit(self, plan: str, unit: int) -> CheckpointKey:
        """A work unit's of this ingestion (its own transactional id); the plan's digest is in
        the key, as a new plan numbers other ranges with the same ids."""
        return CheckpointKey(f"{self.transactional_id}-{unit}", f"{self.key}/{plan}/{unit}",
                             self.restart)


def ensure_offsets_topic(kafka: Kafka, timeout_s: float) -> None:
    """Creates the offsets topic compacted, or checks that the existing one is compacted only.

    A topic with ``delete`` in its cleanup policy could lose the last checkpoint of a unit to
    retention, and the next attempt would ingest it again from the start: refused.
    """
    topic = kafka.offsets_topic
    admin = Admin(admin_config(kafka), timeout_s)
    if not admin.exists(topic):
        creation = kafka.create_topics or TopicCreation()
        admin.create([topic], TopicCreation(
            partitions=OFFSETS_PARTITIONS, replication_factor=creation.replication_factor,
            config={"cleanup.policy": REQUIRED_POLICY}))
        admin.wait_ready(topic)
        return
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        configs = admin.client.describe_configs([resource])[resource].result(
            timeout=max(1.0, admin.deadline - time.monotonic()))
    except KafkaException as e:
        raise TopicError(f"cannot read the configuration of the offsets topic {topic}: "
                         f"{e.args[0].str()}") from e
    entry = configs.get("cleanup.policy")
    policy = entry.value if entry is not None else "delete"
    if policy != REQUIRED_POLICY:
        raise TopicError(
            f"the offsets topic {topic} has cleanup.policy={policy}: retention could delete the "
            "checkpoints exactly-once resumes from. Set cleanup.policy=compact on it, or name "
            "another topic in spec.kafka.offsetsTopic"
        )


@dataclass(frozen=True)
class TopicLimits:
    """What the data topic refuses a record for, known before sending it."""

    max_message_bytes: int | None = None
    compacted: bool = False
    """A compacted topic refuses a record without a key."""


def topic_limits(kafka: Kafka, timeout_s: float) -> TopicLimits:
    """The data topic's limits (the defaults when the worker may not read its configuration)."""
    admin = Admin(admin_config(kafka), timeout_s)
    resource = ConfigResource(ResourceType.TOPIC, kafka.topic)
    try:
        configs = admin.client.describe_configs([resource])[resource].result(timeout=timeout_s)
    except KafkaException as e:
        log.info("cannot read the configuration of %s: %s", kafka.topic, e.args[0].str())
        return TopicLimits()
    size = configs.get("max.message.bytes")
    policy = configs.get("cleanup.policy")
    return TopicLimits(
        max_message_bytes=int(size.value) if size is not None and size.value else None,
        compacted=policy is not None and "compact" in (policy.value or ""),
    )


def checkpoint_record(key: CheckpointKey, cp: Checkpoint, writer: str) -> tuple[bytes, bytes]:
    """The (key, value) of the offsets topic's record for ``cp``."""
    value = {"checkpoint": cp.to_dict(), "restart": key.restart,
             "transactionalId": key.transactional_id, "writer": writer}
    return key.key.encode(), orjson.dumps(value)


def partition_for(key: CheckpointKey, partitions: int) -> int:
    return partition_of("murmur2", key.key.encode(), partitions)


class OffsetsReader:
    """Reads a unit's last committed checkpoint from the offsets topic."""

    def __init__(self, kafka: Kafka, timeout_s: float, wait_stable_s: float) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.wait_stable_s = wait_stable_s
        """How long other units' open transactions may hold the partition's stable offset back
        (their commit interval; a hanging transaction holds it until it times out)."""

    def partitions(self) -> int:
        admin = Admin(admin_config(self.kafka), self.timeout_s)
        md = admin.client.list_topics(self.kafka.offsets_topic, timeout=self.timeout_s)
        found = md.topics.get(self.kafka.offsets_topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicError(f"offsets topic {self.kafka.offsets_topic} not found")
        return len(found.partitions)

    def read(self, key: CheckpointKey) -> dict[str, Any] | None:
        """The value of ``key``'s last committed record (None: none).

        Reading ``read_committed`` stops at the last stable offset, which another unit's open
        transaction holds back: the read waits until the stable offset reaches the end the
        partition had when it began (our own last commit is before that end: the producer's
        ``init_transactions`` completed it), then reads to that end.
        """
        topic = self.kafka.offsets_topic
        tp = TopicPartition(topic, partition_for(key, self.partitions()))
        admin = Admin(admin_config(self.kafka), self.timeout_s)
        end = self._offset(admin, tp, IsolationLevel.READ_UNCOMMITTED)
        deadline = time.monotonic() + self.wait_stable_s
        while (stable := self._offset(admin, tp, IsolationLevel.READ_COMMITTED)) < end:
            if time.monotonic() > deadline:
                raise TopicError(
                    f"partition {tp.partition} of the offsets topic {topic} has had a "
                    f"transaction open for over {self.wait_stable_s:.0f} s (stable offset "
                    f"{stable}, end {end}): a hanging transaction? See the README's "
                    "exactly-once section (kafka-transactions.sh)")
            time.sleep(0.1)
        if end == 0:
            return None
        consumer = Consumer({
            **admin_config(self.kafka),
            "group.id": f"csvkafka-offsets-{uuid.uuid4().hex[:12]}",  # never committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        })
        found: bytes | None = None
        want = key.key.encode()
        try:
            consumer.assign([TopicPartition(topic, tp.partition, 0)])
            read_deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < read_deadline:
                msg = consumer.poll(0.05)
                err = msg.error() if msg is not None else None
                if msg is not None and err is None:
                    if msg.key() == want:
                        found = msg.value()
                    read_deadline = time.monotonic() + self.timeout_s
                elif err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise TopicError(f"reading the offsets topic {topic}: {err.str()}")
                (pos,) = consumer.position([TopicPartition(topic, tp.partition)])
                if pos.offset >= end:
                    break
            else:
                raise TopicError(f"could not read the offsets topic {topic} to its end ({end})")
        finally:
            consumer.close()
        return orjson.loads(found) if found else None

    def _offset(self, admin: Admin, tp: TopicPartition, level: IsolationLevel) -> int:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + self.timeout_s
        while True:
            futures = admin.client.list_offsets({tp: latest}, isolation_level=level,
                                                request_timeout=self.timeout_s)
            try:
                return int(futures[tp].result(timeout=self.timeout_s).offset)
            except KafkaException as e:
                err: KafkaError = e.args[0]
                # A new topic's leader, or one moving after a broker restart: soon answered.
                if err.retriable() and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise TopicError(f"offsets topic {tp.topic}: {err.str()}") from e


class KafkaCheckpointStore:
    """Exactly-once's store: the checkpoint comes from the offsets topic, status mirrors it.

    ``load`` reads the last committed checkpoint of the unit; ``save`` and ``final`` go to the
    wrapped store (the resource's status), which the worker writes only after a commit, so it
    may lag behind Kafka and is never ahead of it. A status checkpoint further on than Kafka's
    is one an at-least-once run wrote before the mode changed: its rows are delivered, so the
    run resumes from it.
    """

    def __init__(self, inner: CheckpointStore, reader: OffsetsReader, key: CheckpointKey) -> None:
        self.inner, self.reader, self.key = inner, reader, key

    def load(self) -> Checkpoint | None:
        mirrored = self.inner.load()
        started = time.monotonic()
        value = self.reader.read(self.key)
        log.debug("Read the offsets topic", extra={
            "key": self.key.key, "found": value is not None,
            "seconds": round(time.monotonic() - started, 3)})
        if value is None or int(value.get("restart", 0)) != self.key.restart:
            if value is not None:
                log.info("The offsets topic's checkpoint is of an earlier restart: starting over")
            return mirrored
        committed = Checkpoint.from_dict(value["checkpoint"])
        if (mirrored is not None and mirrored.source_version == committed.source_version
                and mirrored.byte_offset > committed.byte_offset):
            return mirrored
        return committed

    def save(self, checkpoint: Checkpoint) -> None:
        self.inner.save(checkpoint)

    def final(self, checkpoint: Checkpoint, outcome: Outcome) -> None:
        self.inner.final(checkpoint, outcome)
