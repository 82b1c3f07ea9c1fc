"""The topics an ingestion writes to, against the real broker (auto-creation off, as on a user's
cluster): a missing one fails the run by name before any row is sent, unless
``spec.kafka.createTopics`` asks the worker to create it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, ConfigResource

from ingest_worker.api.spec import Kafka, TopicCreation
from ingest_worker.exitcodes import EXIT_KAFKA
from ingest_worker.kafka.topics import TopicError, ensure_topics
from tests.conftest import TestEnv, unique_name

ROOT = Path(__file__).resolve().parents[2]
ROWS = "id,name\n1,a\n2,b\n3,c\n4,d\n"


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest_worker", "run", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=timeout,
    )


def partitions(admin: AdminClient, topic: str) -> int | None:
    """The topic's partition count, None if the broker does not know it."""
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    return None if md is None or md.error is not None else len(md.partitions)


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(ROWS)
    return path


def test_missing_topic_fails_the_run_by_name(
    csv_file: Path, kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    topic = unique_name("missing")
    proc = run_cli(str(csv_file), "--topic", topic, "--bootstrap-servers", kafka_bootstrap)
    assert proc.returncode == EXIT_KAFKA, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("csv-ingest: FAILED")]
    assert len(failed) == 1, proc.stderr
    assert f"topic {topic} does not exist on {kafka_bootstrap}" in failed[0]
    assert "spec.kafka.createTopics" in failed[0]
    assert partitions(kafka_admin, topic) is None  # and nothing created it


def test_missing_dead_letter_topic_fails_before_any_row(
    csv_file: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    new_topic: Callable[..., str], consume_all: Callable[..., list[Message]],
) -> None:
    topic, dlq = new_topic(partitions=1), unique_name("dlq")
    proc = run_cli(str(csv_file), "--topic", topic, "--bootstrap-servers", kafka_bootstrap,
                   "--dead-letter-topic", dlq)
    assert proc.returncode == EXIT_KAFKA, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("csv-ingest: FAILED")]
    assert len(failed) == 1, proc.stderr
    assert f"dead-letter topic {dlq} does not exist" in failed[0]
    assert topic not in failed[0]  # the data topic is there
    assert partitions(kafka_admin, dlq) is None
    assert consume_all(topic, 0, timeout=5) == []  # failed before the first row


def test_spec_create_topics_creates_both_with_their_partitions_and_config(
    tmp_path: Path, csv_file: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Message]],
) -> None:
    topic, dlq = unique_name("made"), unique_name("made-dlq")
    spec = tmp_path / "ingestion.yaml"
    spec.write_text(yaml.safe_dump({
        "apiVersion": "csvkafka.io/v1alpha1",
        "kind": "CsvIngestion",
        "metadata": {"name": "made"},
        "spec": {
            "source": {"url": str(csv_file)},
            "kafka": {
                "bootstrapServers": kafka_bootstrap, "topic": topic, "deadLetterTopic": dlq,
                "createTopics": {"partitions": 3, "config": {"retention.ms": "3600000"}},
            },
        },
    }))
    proc = run_cli("--spec", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert "rows read 4, published 4, failed 0" in proc.stdout
    assert partitions(kafka_admin, topic) == 3
    assert partitions(kafka_admin, dlq) == 3
    assert len(consume_all(topic, 4)) == 4
    for name in (topic, dlq):
        described = kafka_admin.describe_configs([ConfigResource("topic", name)])
        config = next(iter(described.values())).result(timeout=30)
        assert config["retention.ms"].value == "3600000"
    # Run again: the topics exist now, and the file is ingested again into them.
    again = run_cli("--spec", str(spec))
    assert again.returncode == 0, again.stderr
    assert len(consume_all(topic, 8)) == 8


def test_workers_creating_the_same_topic_at_once_both_succeed(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    """The second creation gets TOPIC_ALREADY_EXISTS, which is what it wanted."""
    kafka = Kafka(bootstrap_servers=kafka_bootstrap, topic=unique_name("race"),
                  create_topics=TopicCreation(partitions=2))
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            ensure_topics(kafka, 60)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ensure) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert partitions(kafka_admin, kafka.topic) == 2


def test_a_creation_the_broker_refuses_fails_with_its_reason(kafka_bootstrap: str) -> None:
    kafka = Kafka(bootstrap_servers=kafka_bootstrap, topic=unique_name("rf3"),
                  create_topics=TopicCreation(replication_factor=3))  # one broker here
    with pytest.raises(TopicError, match=f"creating topic {kafka.topic} on .* failed: .*replica"):
        ensure_topics(kafka, 60)


def test_an_unreachable_broker_fails_within_the_retry_budget(
    csv_file: Path, testenv: TestEnv
) -> None:
    # A port nothing listens on, on the node: connections are refused, as to a broker down.
    servers = f"{testenv.environ['CSVKAFKA_NODE_IP']}:1"
    start = time.monotonic()
    proc = run_cli(str(csv_file), "--topic", "t", "--bootstrap-servers", servers,
                   "--retry-budget-seconds", "3")
    took = time.monotonic() - start
    assert proc.returncode == EXIT_KAFKA, proc.stderr
    assert f"Kafka at {servers} did not answer within 3 s" in proc.stderr
    assert "Connection refused" in proc.stderr
    assert took < 30, f"{took:.1f} s"
