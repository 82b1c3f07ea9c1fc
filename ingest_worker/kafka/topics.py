"""The topics an ingestion writes to exist before the first row is sent.

Production clusters run with ``auto.create.topics.enable=false``: a producer to a missing topic
gets no error at once, only ``UNKNOWN_TOPIC_OR_PART`` per message once librdkafka's metadata
wait runs out, which reads as a broker outage. So the worker looks the topic (and the
dead-letter topic) up once, before it reads the file, and fails with a message that names the
missing one, or creates it when ``spec.kafka.createTopics`` asks for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ingest_worker.api.spec import Kafka, TopicCreation
from ingest_worker.kafka import TopicError
from ingest_worker.kafka.tls import check_client_certificate

log = logging.getLogger(__name__)

# The producer properties an admin client also needs to reach and authenticate to the brokers
# the producer uses; the others (acks, linger.ms, ...) are producer-only and an admin client
# warns about them.
_ADMIN_PREFIXES = ("security.", "sasl.", "ssl.")
_ADMIN_KEYS = frozenset({"bootstrap.servers", "client.id", "enable.ssl.certificate.verification"})
# A login that cannot succeed: retrying only repeats it (a wrong password, a certificate the
# other side does not trust).
_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})
_AUTHZ = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})
# Answers about a topic that exists but is not ready to take writes yet (just created, or its
# leader moving): the producer waits for those itself.
_NOT_READY = frozenset({KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION})


def admin_config(kafka: Kafka) -> dict[str, str]:
    """The admin client's configuration: the brokers, and the user's connection and security
    properties (``security.*``, ``sasl.*``, ``ssl.*``, ``client.id``) from producerProperties."""
    conf = {"bootstrap.servers": kafka.bootstrap_servers}
    conf.update(
        {k: v for k, v in kafka.producer_properties.items()
         if k in _ADMIN_KEYS or k.startswith(_ADMIN_PREFIXES)}
    )
    return conf


def ensure_topics(
    kafka: Kafka, timeout_s: float, config: Mapping[str, str] | None = None
) -> None:
    """Returns once the topic and the dead-letter topic (if set) exist.

    A missing one is created when ``kafka.create_topics`` is set (a topic created meanwhile by
    someone else counts as created); otherwise :class:`TopicError` names it. Raises
    :class:`TopicError` too when the brokers do not answer within ``timeout_s``, or refuse the
    worker's principal.
    """
    topics = [kafka.topic]
    if kafka.dead_letter_topic and kafka.dead_letter_topic != kafka.topic:
        topics.append(kafka.dead_letter_topic)
    conf = dict(config) if config is not None else admin_config(kafka)
    check_client_certificate(conf)
    admin = Admin(conf, timeout_s)
    missing = [t for t in topics if not admin.exists(t)]
    if not missing:
        return
    if kafka.create_topics is None:
        raise TopicError(_missing_message(kafka, missing, admin.servers))
    admin.create(missing, kafka.create_topics)
    for topic in missing:
        admin.wait_ready(topic)


def _missing_message(kafka: Kafka, missing: list[str], servers: str) -> str:
    names = " and ".join(
        f"{'dead-letter topic' if t == kafka.dead_letter_topic else 'topic'} {t}" for t in missing
    )
    verb, it = ("does", "it") if len(missing) == 1 else ("do", "them")
    return (
        f"{names} {verb} not exist on {servers}: create {it}, or set spec.kafka.createTopics "
        f"to have the worker create {it}"
    )


class Admin:
    """An admin client with one deadline for all its calls, and the brokers' last error (a
    refused connection, a failed SASL handshake) to tell why nothing answered."""

    def __init__(self, config: dict[str, str], timeout_s: float) -> None:
        self.servers = config["bootstrap.servers"]
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.last_error: KafkaError | None = None
        conf: dict[str, Any] = {
            **config,
            "error_cb": self._on_error,
            # Connection errors would be logged every retry; the last one goes into our error.
            "log_level": 0,
        }
        self.client = AdminClient(conf)

    def _on_error(self, err: KafkaError) -> None:
        # "1/1 brokers are down" says less than the connection error before it.
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self.last_error is None:
            self.last_error = err

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._no_answer()
        return left

    def _no_answer(self, err: KafkaError | None = None) -> TopicError:
        self.client.poll(0)  # serves the error callbacks
        why = self.last_error or err
        return TopicError(
            f"Kafka at {self.servers} did not answer within {self.timeout_s:g} s"
            + (f": {why.str()}" if why is not None else "")
        )

    def _list(self, topic: str) -> Any:
        """The brokers' metadata for ``topic``, retried until the deadline; a refused login or
        TLS handshake ends it at once (a retry would not fix it)."""
        while True:
            try:
                return self.client.list_topics(topic=topic, timeout=min(5.0, self._remaining()))
            except KafkaException as e:
                err: KafkaError = e.args[0]
                self.client.poll(0)
                why = self.last_error or err
                if why.code() in _REFUSED or err.code() in _AUTHZ:
                    raise TopicError(
                        f"Kafka at {self.servers} refused the worker: {why.str()}"
                    ) from e
                if err.code() not in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
                    raise TopicError(f"looking up topic {topic} on {self.servers} failed: "
                                     f"{err.str()}") from e
                if self.deadline - time.monotonic() <= 0:
                    raise self._no_answer(err) from e

    def _metadata(self, topic: str) -> KafkaError | None:
        """The broker's answer about ``topic``: None when it exists, else its error."""
        md = self._list(topic)
        found = md.topics.get(topic)
        if found is None:
            return KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        error: KafkaError | None = found.error
        if error is None and not found.partitions:
            return KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
        return error

    def exists(self, topic: str) -> bool:
        err = self._metadata(topic)
        if err is None or err.code() in _NOT_READY:
            return True
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        if err.code() in _AUTHZ:
            raise TopicError(
                f"not authorized to describe topic {topic} on {self.servers}: the worker's "
                "principal needs Describe and Write on it"
            )
        raise TopicError(f"looking up topic {topic} on {self.servers} failed: {err.str()}")

    def create(self, topics: list[str], how: TopicCreation) -> None:
        new = [
            NewTopic(t, num_partitions=how.partitions, replication_factor=how.replication_factor,
                     config=dict(how.config))
            for t in topics
        ]
        left = self._remaining()
        futures = self.client.create_topics(new, operation_timeout=left, request_timeout=left)
        for topic, future in futures.items():
            try:
                future.result(timeout=self._remaining())
            except FutureTimeout as e:
                raise self._no_answer() from e
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # another worker (or person) was first: what we wanted
                if err.code() in _AUTHZ:
                    raise TopicError(
                        f"not authorized to create topic {topic} on {self.servers} (the "
                        "worker's principal needs Create on the topic or the cluster): create "
                        "it beforehand, or grant that"
                    ) from e
                if err.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
                    raise self._no_answer(err) from e
                raise TopicError(f"creating topic {topic} on {self.servers} failed: "
                                 f"{err.str()}") from e
            log.info(f"Created topic {topic}", extra={
                "topic": topic, "partitions": how.partitions,
                "replication_factor": how.replication_factor, "config": dict(how.config)})

    def wait_ready(self, topic: str) -> None:
        """Waits until the brokers' metadata shows ``topic`` with a leader for every partition,
        so the producer's first metadata request finds it."""
        while True:
            found = self._list(topic).topics.get(topic)
            if (found is not None and found.error is None and found.partitions
                    and all(p.leader >= 0 for p in found.partitions.values())):
                return
            time.sleep(min(0.1, self._remaining()))
