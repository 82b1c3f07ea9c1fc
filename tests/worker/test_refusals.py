"""Rows Kafka refuses on its own are that row's error, not the file's.

Against the real broker, which runs with Kafka's own limits (1 MB messages): each refused row is
counted, logged with its line, dead-lettered (cut to fit, with a header saying so), the rows
around it land exactly once, and the independent verifier accounts for every row.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from ingest_worker import MemoryCheckpointStore, run_ingestion
from ingest_worker.kafka import deadletter
from ingest_worker.verify import verify_messages
from tests.conftest import unique_name
from tests.worker.test_kafka import make_spec


def _rows(n: int, big_at: int, big: bytes) -> bytes:
    lines = [b"id,name,payload"]
    for i in range(1, n + 1):
        lines.append(b"%d,row%d,%s" % (i, i, big if i == big_at else b"small"))
    return b"\n".join(lines) + b"\n"


def _topic(admin: AdminClient, partitions: int = 3, **config: str) -> str:
    name = unique_name("refuse")
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(timeout=60)
    return name


def _headers(m: Message) -> dict[str, bytes]:
    return {k: v or b"" for k, v in m.headers() or []}


def _run(path: Path, topic: str, dlq: str, bootstrap: str, tmp_path: Path,
         **props: str) -> tuple[Any, list[dict[str, Any]]]:
    errors = tmp_path / "errors.jsonl"
    spec = make_spec(path, topic, bootstrap, kafka__deadLetterTopic=dlq,
                     kafka__keyColumns=["id"], kafka__producerProperties=props)
    with errors.open("w") as f:
        result = run_ingestion(spec, MemoryCheckpointStore(), errors_log=f)
    return result, [orjson.loads(line) for line in errors.read_text().splitlines()]


def test_a_row_over_the_clients_limit_is_dead_lettered_cut_to_fit(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Message]],
) -> None:
    """A 2 MB row, Kafka's default limits everywhere: librdkafka's own size check refuses it
    (message.max.bytes, 1 MB), and the dead letter carries as much of it as fits."""
    big = secrets.token_hex(1024 * 1024).encode()  # 2 MiB
    path = tmp_path / "big.csv"
    path.write_bytes(_rows(200, 57, big))
    topic, dlq = _topic(kafka_admin), _topic(kafka_admin, 1)
    result, logged = _run(path, topic, dlq, kafka_bootstrap, tmp_path)
    assert result.completed, result.message
    c = result.counters
    assert (c.rows_read, c.rows_published, c.rows_failed) == (200, 199, 1)
    assert [e["line"] for e in logged] == [58]
    assert "refused by Kafka" in logged[0]["reason"] and "too large" in logged[0]["reason"]
    published = consume_all(topic, 199)
    assert sorted(int(orjson.loads(m.value() or b"")["id"]) for m in published) == \
        [i for i in range(1, 201) if i != 57]
    [dead] = consume_all(dlq, 1)
    h = _headers(dead)
    raw = b"57,row57," + big
    assert h[deadletter.LINE] == b"58" and h[deadletter.KAFKA_ERROR] == b"10"
    assert h[deadletter.TRUNCATED] == b"true"
    assert h[deadletter.ORIGINAL_LENGTH] == str(len(raw)).encode()
    value = dead.value() or b""
    assert 0 < len(value) < 1_000_000 and raw.startswith(value)
    report = verify_messages(str(path), published, dead_letters=[dead],
                             reported_bad=c.rows_failed)
    assert report.ok and report.rows_refused == 1 and report.lost == 0, report.summary()


def test_a_row_the_broker_refuses_leaves_its_batch_mates_alone(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Message]],
) -> None:
    """A 600 KB row to a topic capped at 512 KB: within the client's limit, so the broker is the
    one to refuse it, together with the request it came in. The healthy rows of that request are
    sent again (never dead-lettered) and land exactly once."""
    big = secrets.token_hex(300 * 1024).encode()  # 600 KiB, incompressible as sent (no lz4)
    path = tmp_path / "big.csv"
    path.write_bytes(_rows(3000, 1500, big))
    topic = _topic(kafka_admin, 1, **{"max.message.bytes": str(512 * 1024)})
    dlq = _topic(kafka_admin, 1)
    result, logged = _run(path, topic, dlq, kafka_bootstrap, tmp_path,
                          **{"compression.type": "none"})
    assert result.completed, result.message
    c = result.counters
    assert (c.rows_read, c.rows_published, c.rows_failed) == (3000, 2999, 1)
    assert [e["line"] for e in logged] == [1501]
    published = consume_all(topic, 2999)
    ids = [int(orjson.loads(m.value() or b"")["id"]) for m in published]
    assert sorted(ids) == [i for i in range(1, 3001) if i != 1500]  # each exactly once
    [dead] = consume_all(dlq, 1)
    h = _headers(dead)
    assert h[deadletter.KAFKA_ERROR] == b"10" and deadletter.TRUNCATED not in h
    assert dead.value() == b"1500,row1500," + big
    report = verify_messages(str(path), published, dead_letters=[dead],
                             reported_bad=c.rows_failed)
    assert report.ok and report.rows_refused == 1, report.summary()


def test_a_keyless_row_to_a_compacted_topic_is_that_rows_error(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Message]],
) -> None:
    """A compacted topic refuses a record without a key: the row with an empty key column is
    dead-lettered, and the others of its request are sent again."""
    path = tmp_path / "keys.csv"
    path.write_bytes(b"id,name\n" + b"".join(
        b"%s,n%d\n" % (b"" if i == 42 else str(i).encode(), i) for i in range(1, 101)))
    topic = _topic(kafka_admin, 1, **{"cleanup.policy": "compact"})
    dlq = _topic(kafka_admin, 1)
    result, logged = _run(path, topic, dlq, kafka_bootstrap, tmp_path)
    assert result.completed, result.message
    assert (result.counters.rows_published, result.counters.rows_failed) == (99, 1)
    assert [e["line"] for e in logged] == [43]
    published = consume_all(topic, 99)
    assert len(published) == 99
    [dead] = consume_all(dlq, 1)
    assert dead.value() == b",n42"
    assert _headers(dead)[deadletter.KAFKA_ERROR] == b"87"  # INVALID_RECORD


def test_without_a_dead_letter_topic_a_refused_row_is_counted_and_logged(
    tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
    consume_all: Callable[..., list[Message]],
) -> None:
    big = secrets.token_hex(1024 * 1024).encode()
    path = tmp_path / "big.csv"
    path.write_bytes(_rows(20, 3, big))
    topic = _topic(kafka_admin)
    spec = make_spec(path, topic, kafka_bootstrap)
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    assert (result.counters.rows_published, result.counters.rows_failed) == (19, 1)
    assert len(consume_all(topic, 19)) == 19
