"""Typed values against the real Schema Registry and the real broker.

A consumer reads them as a downstream team would: confluent-kafka's own ``AvroDeserializer`` and
``JSONDeserializer`` with the registry. The expected values are written out by hand here, not
computed by the code under test; ``csv-verify`` then checks every row independently.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Message
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from ingest_worker import MemoryCheckpointStore, run_ingestion
from ingest_worker.checkpoint import FileCheckpointStore
from ingest_worker.exitcodes import EXIT_CONFIG
from ingest_worker.kafka import deadletter
from ingest_worker.schema.settle import SECRET_DIR_ENV
from ingest_worker.verify import CsvFormat, verify
from tests.conftest import SecuredRegistry
from tests.worker.test_kafka import make_spec

UTC = dt.UTC

TYPED_CSV = (
    "id,amount,day,at,local_at,note,score,ok\n"
    '1,12.5,2024-01-31,2024-01-31T10:00:00Z,2024-01-31 11:00:00,"plain",1.5,true\n'
    '2,-0.001,1969-12-31,2024-02-01T00:00:00.123456+01:00,2024-02-01 00:00:00,'
    '"a, ""quoted"" text",-2e-3,no\n'
    '3,,,,,"",,\n'
    '4,123456789.120,2000-02-29,1970-01-01T00:00:00Z,1970-01-01 01:00:00,'
    '"multi\nline é",1e300,1\n'
    f"{2**62},0,2024-12-31,2024-12-31 23:59:59.999999Z,2024-12-31 23:59:59,x,0,false\n"
)
TYPES: dict[str, Any] = {
    "id": "int",
    "amount": {"type": "decimal", "precision": 12, "scale": 3},
    "day": {"type": "date"},
    "at": "timestamp",
    "local_at": {"type": "timestamp", "timezone": "+01:00"},
    "note": {"type": "string", "nullable": True},
    "score": "float",
    "ok": "bool",
}
EXPECTED = [
    {"id": 1, "amount": Decimal("12.500"), "day": dt.date(2024, 1, 31),
     "at": dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
     "local_at": dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
     "note": "plain", "score": 1.5, "ok": True},
    {"id": 2, "amount": Decimal("-0.001"), "day": dt.date(1969, 12, 31),
     "at": dt.datetime(2024, 1, 31, 23, 0, 0, 123456, tzinfo=UTC),
     "local_at": dt.datetime(2024, 1, 31, 23, tzinfo=UTC),
     "note": 'a, "quoted" text', "score": -0.002, "ok": False},
    {"id": 3, "amount": None, "day": None, "at": None, "local_at": None, "note": None,
     "score": None, "ok": None},
    {"id": 4, "amount": Decimal("123456789.120"), "day": dt.date(2000, 2, 29),
     "at": dt.datetime(1970, 1, 1, tzinfo=UTC), "local_at": dt.datetime(1970, 1, 1, tzinfo=UTC),
     "note": "multi\nline é", "score": 1e300, "ok": True},
    {"id": 2**62, "amount": Decimal("0.000"), "day": dt.date(2024, 12, 31),
     "at": dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
     "local_at": dt.datetime(2024, 12, 31, 22, 59, 59, tzinfo=UTC),
     "note": "x", "score": 0.0, "ok": False},
]


def _spec(path: Path, topic: str, bootstrap: str, registry: str, **over: Any) -> Any:
    kafka = {"valueFormat": "avro", "schemaRegistry": {"url": registry},
             **over.pop("kafka", {})}
    fmt = over.pop("format", {})
    return make_spec(path, topic, bootstrap, **{f"kafka__{k}": v for k, v in kafka.items()},
                     **{f"format__{k}": v for k, v in fmt.items()})


def _decode(messages: list[Message], topic: str, deserializer: Any) -> list[dict[str, Any]]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [deserializer(m.value(), ctx) for m in messages]


def _versions(registry: str, subject: str) -> list[int]:
    got: list[int] = requests.get(f"{registry}/subjects/{subject}/versions", timeout=10).json()
    return got


def test_a_typed_file_lands_as_avro(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """Ints, decimals, dates, timestamps with and without a zone, empty fields (nulls) and quoted
    text: a consumer with the registry reads back exactly the source values."""
    path = tmp_path / "typed.csv"
    path.write_text(TYPED_CSV)
    topic = new_topic(partitions=1)
    spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                 format={"columnTypes": TYPES}, kafka={"keyColumns": ["id"]})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    assert result.checkpoint.counters.rows_published == len(EXPECTED)
    messages = consume_all(topic, len(EXPECTED))
    assert all(m.value()[:1] == b"\x00" for m in messages)  # Confluent's wire format
    sr = SchemaRegistryClient({"url": schema_registry})
    got = _decode(messages, topic, AvroDeserializer(sr))
    assert [{k: v for k, v in r.items() if k != "_id"} for r in got] == EXPECTED
    assert [m.key() for m in messages] == [str(r["id"]).encode() for r in EXPECTED]
    assert _versions(schema_registry, f"{topic}-value") == [1]
    fmt = CsvFormat(column_types=TYPES, schema_registry=schema_registry)
    report = verify(str(path), topic, kafka_bootstrap, fmt, timeout=30)
    assert report.ok and report.rows_present == len(EXPECTED), report.summary()


def test_inferred_types_then_a_row_that_does_not_fit(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """The first 10,000 rows say n is an int; row 50,001 holds 12.5: that row is a bad row in
    the dead-letter topic with its line, the schema does not change, the others land."""
    rows = 60_000
    path = tmp_path / "inferred.csv"
    with path.open("w") as f:
        f.write("n,name,at\n")
        for i in range(1, rows + 1):
            n = "12.5" if i == 50_001 else str(i)
            f.write(f"{n},name-{i},2024-01-01T00:00:{i % 60:02d}Z\n")
    topic, dlq = new_topic(partitions=3), new_topic(partitions=1)
    spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                 format={"inferTypes": {"sampleRows": 10_000}},
                 kafka={"deadLetterTopic": dlq})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    c = result.checkpoint.counters
    assert (c.rows_read, c.rows_published, c.rows_failed) == (rows, rows - 1, 1)
    dead = consume_all(dlq, 1)
    assert len(dead) == 1 and dead[0].value() == b"12.5,name-50001,2024-01-01T00:00:21Z"
    headers = {k: v for k, v in dead[0].headers() or []}
    assert headers[deadletter.LINE] == b"50002"
    assert b"column 'n': not an int: '12.5'" in headers[deadletter.REASON]
    latest = requests.get(f"{schema_registry}/subjects/{topic}-value/versions/latest",
                          timeout=10).json()
    assert '"name":"n","type":"long"' in latest["schema"]
    assert '"timestamp-micros"' in latest["schema"]
    # The verifier takes the types from the registered schema (nobody declared them).
    fmt = CsvFormat(schema_registry=schema_registry)
    report = verify(str(path), topic, kafka_bootstrap, fmt, dead_letter_topic=dlq,
                    reported_bad=1, timeout=30)
    assert report.ok and report.rows_present == rows - 1 and report.bad_expected == 1, \
        report.summary()


def test_compatibility_versions_and_refusals(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """An added nullable column is version 2 under BACKWARD; an added required column, or a
    column whose type changes, is refused before any row is produced, with the subject, the
    compatibility level and the registry's reason."""
    topic = new_topic(partitions=1)
    subject = f"{topic}-value"

    def ingest(name: str, text: str, types: dict[str, Any]) -> Any:
        path = tmp_path / name
        path.write_text(text)
        spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                     format={"columnTypes": types})
        return run_ingestion(spec, MemoryCheckpointStore())

    first = ingest("v1.csv", "id,name\n1,a\n2,b\n", {"id": "int"})
    assert first.completed, first.message
    second = ingest("v2.csv", "id,name,extra\n3,c,\n4,d,7\n",
                    {"id": "int", "extra": {"type": "int", "nullable": True}})
    assert second.completed, second.message
    assert _versions(schema_registry, subject) == [1, 2]
    required = ingest("v3.csv", "id,name,extra,req\n5,e,1,9\n",
                      {"id": "int", "extra": {"type": "int", "nullable": True},
                       "req": {"type": "int", "nullable": False}})
    changed = ingest("v4.csv", "id,name,extra\nx5,e,1\n",
                     {"id": "string", "extra": {"type": "int", "nullable": True}})
    for refused in (required, changed):
        assert not refused.completed and refused.exit_code == EXIT_CONFIG
        assert f"subject {subject} (compatibility BACKWARD)" in refused.message, refused.message
        assert refused.checkpoint is None or refused.checkpoint.counters.rows_published == 0
    assert "req" in required.message and "id" in changed.message
    assert _versions(schema_registry, subject) == [1, 2]
    assert len(consume_all(topic, 4, timeout=10)) == 4  # nothing of the refused files


def test_without_auto_register_the_latest_version_is_used_or_the_file_refused(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """autoRegister: false writes with the subject's latest version (its field order, not the
    file's), and refuses at start a file that does not fit it."""
    topic = new_topic(partitions=1)
    first = tmp_path / "a.csv"
    first.write_text("id,name\n1,a\n")
    result = run_ingestion(_spec(first, topic, kafka_bootstrap, schema_registry,
                                 format={"columnTypes": {"id": "int"}}), MemoryCheckpointStore())
    assert result.completed, result.message
    fixed = {"schemaRegistry": {"url": schema_registry, "autoRegister": False}}
    swapped = tmp_path / "b.csv"
    swapped.write_text("name,id\nb,2\n")
    result = run_ingestion(_spec(swapped, topic, kafka_bootstrap, schema_registry, kafka=fixed),
                           MemoryCheckpointStore())
    assert result.completed, result.message
    sr = SchemaRegistryClient({"url": schema_registry})
    got = _decode(consume_all(topic, 2), topic, AvroDeserializer(sr))
    assert [(r["id"], r["name"]) for r in got] == [(1, "a"), (2, "b")]
    extra = tmp_path / "c.csv"
    extra.write_text("id,name,more\n3,c,x\n")
    result = run_ingestion(_spec(extra, topic, kafka_bootstrap, schema_registry, kafka=fixed),
                           MemoryCheckpointStore())
    assert not result.completed and result.exit_code == EXIT_CONFIG
    assert "more are not in the schema" in result.message and f"{topic}-value" in result.message
    missing = tmp_path / "d.csv"
    missing.write_text("a,b\n1,2\n")
    result = run_ingestion(_spec(missing, new_topic(partitions=1), kafka_bootstrap,
                                 schema_registry, kafka=fixed), MemoryCheckpointStore())
    assert not result.completed and "no schema is registered under the subject" in result.message


@pytest.mark.parametrize("strategy", ["RecordNameStrategy", "TopicRecordNameStrategy"])
def test_subject_name_strategies(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    strategy: str,
) -> None:
    topic = new_topic(partitions=1)
    path = tmp_path / "s.csv"
    path.write_text("id\n1\n")
    name = f"com.example.{topic.replace('-', '_')}"
    reg = {"url": schema_registry, "subjectNameStrategy": strategy, "recordName": name}
    result = run_ingestion(_spec(path, topic, kafka_bootstrap, schema_registry,
                                 kafka={"schemaRegistry": reg}), MemoryCheckpointStore())
    assert result.completed, result.message
    subject = name if strategy == "RecordNameStrategy" else f"{topic}-{name}"
    assert _versions(schema_registry, subject) == [1]


def test_json_schema_round_trip(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """The same typed file as JSON Schema: the values are JSON behind the 5-byte prefix, each
    validated by confluent-kafka's JSONDeserializer against the registered schema."""
    path = tmp_path / "typed.csv"
    path.write_text(TYPED_CSV)
    topic = new_topic(partitions=1)
    spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                 format={"columnTypes": TYPES}, kafka={"valueFormat": "jsonSchema"})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    sr = SchemaRegistryClient({"url": schema_registry})
    got = _decode(consume_all(topic, len(EXPECTED)), topic,
                  JSONDeserializer(None, schema_registry_client=sr))
    first = {k: v for k, v in got[0].items() if k != "_id"}
    assert first == {"id": 1, "amount": "12.500", "day": "2024-01-31",
                     "at": "2024-01-31T10:00:00Z", "local_at": "2024-01-31 11:00:00",
                     "note": "plain", "score": 1.5, "ok": True}
    assert got[1]["note"] == 'a, "quoted" text' and got[1]["amount"] == "-0.001"
    assert {k: v for k, v in got[2].items() if k != "_id"} == dict.fromkeys(first) | {"id": 3}
    assert got[4]["id"] == 2**62
    schema = requests.get(f"{schema_registry}/subjects/{topic}-value/versions/latest",
                          timeout=10).json()
    assert schema["schemaType"] == "JSON"
    report = verify(str(path), topic, kafka_bootstrap,
                    CsvFormat(column_types=TYPES, schema_registry=schema_registry), timeout=30)
    assert report.ok and report.rows_present == len(EXPECTED), report.summary()


def test_avro_keys(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """keyFormat avro: the key is a record of the key columns under <topic>-key."""
    path = tmp_path / "k.csv"
    path.write_text("region,id,v\neu,1,a\nus,2,b\n")
    topic = new_topic(partitions=1)
    spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                 format={"columnTypes": {"id": "int"}},
                 kafka={"keyFormat": "avro", "keyColumns": ["region", "id"]})
    result = run_ingestion(spec, MemoryCheckpointStore())
    assert result.completed, result.message
    sr = SchemaRegistryClient({"url": schema_registry})
    ctx = SerializationContext(topic, MessageField.KEY)
    keys = [AvroDeserializer(sr)(m.key(), ctx) for m in consume_all(topic, 2)]
    assert keys == [{"region": "eu", "id": 1}, {"region": "us", "id": 2}]
    assert _versions(schema_registry, f"{topic}-key") == [1]


def test_registry_credentials_from_the_secret(
    tmp_path: Path, kafka_bootstrap: str, secured_registry: SecuredRegistry,
    new_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry that asks for basic auth: the Secret's username and password let the run
    register; a wrong password fails at start with a message a person can act on."""
    path = tmp_path / "a.csv"
    path.write_text("id\n1\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text(secured_registry.username)
    (secret / "password").write_text(secured_registry.password + "\n")  # as kubectl may store it
    monkeypatch.setenv(SECRET_DIR_ENV, str(secret))
    topic = new_topic(partitions=1)
    result = run_ingestion(_spec(path, topic, kafka_bootstrap, secured_registry.url),
                           MemoryCheckpointStore())
    assert result.completed, result.message
    (secret / "password").write_text("wrong")
    result = run_ingestion(_spec(path, new_topic(partitions=1), kafka_bootstrap,
                                 secured_registry.url), MemoryCheckpointStore())
    assert not result.completed and result.exit_code == EXIT_CONFIG
    assert "refused the credentials (HTTP 401): check schemaRegistry.secretRef" in result.message
    assert "wrong" not in result.message


def test_a_resume_reuses_the_recorded_schema(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str, new_topic: Callable[..., str],
    consume_all: Callable[..., list[Message]],
) -> None:
    """Stopped after its first checkpoint, the ingestion resumes with the schema its first run
    settled (recorded beside the checkpoint, as in status): not inferred again, though the rows
    it now starts from would infer otherwise."""
    path = tmp_path / "r.csv"
    rows = 50_000
    with path.open("w") as f:
        f.write("n,v\n")
        for i in range(rows):
            f.write(f"{i},{i if i < 1000 else 'text'}\n")  # v: int in the first rows only
    topic, dlq = new_topic(partitions=1), new_topic(partitions=1)
    spec = _spec(path, topic, kafka_bootstrap, schema_registry,
                 format={"inferTypes": {"sampleRows": 500}},
                 kafka={"deadLetterTopic": dlq})
    spec = spec.model_copy(update={"checkpoint": spec.checkpoint.model_copy(
        update={"every_rows": 5_000})})
    store = FileCheckpointStore(tmp_path / "ckpt.json")
    stop = threading.Event()
    first = run_ingestion(spec, store, stop=stop, reporter=lambda cp: stop.set())
    assert not first.completed and store.load() is not None
    recorded = store.schema()
    assert recorded is not None and recorded["version"] == 1
    assert [c["type"] for c in recorded["columns"]] == ["int", "int"]
    second = run_ingestion(spec, store)
    assert second.completed, second.message
    assert store.schema() == recorded
    assert _versions(schema_registry, f"{topic}-value") == [1]
    c = second.checkpoint.counters
    assert (c.rows_read, c.rows_failed) == (rows, rows - 1000)
    assert len(consume_all(dlq, rows - 1000)) == rows - 1000
