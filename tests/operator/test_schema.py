"""Typed values on the real node: worker pods register the schema in the Schema Registry (which
runs in the node's namespace, beside the broker), record it in status, and every unit reuses it;
a schema the registry refuses fails the ingestion before any row is produced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kubernetes import client

from ingest_worker.verify import CsvFormat, SourceFile, local_version, verify_many
from tests.conftest import SecuredRegistry, TestEnv
from tests.node import DataVolume
from tests.operator.conftest import OperatorDeployment
from tests.operator.test_operator import Ingestions, ingestion


@pytest.fixture
def ingestions(kube_api: client.ApiClient, namespace: str) -> Ingestions:
    return Ingestions(kube_api, namespace)


def _write(path: Any, first: int, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,price,day,note\n")
        for i in range(first, first + rows):
            note = "" if i % 7 == 0 else f'"n, {i}"'
            f.write(f"{i},{i % 1000}.{i % 100:02d},2024-01-{1 + i % 28:02d},{note}\n")


def test_files_of_many_pods_share_one_inferred_schema(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    new_topic: Callable[..., str], data: DataVolume, schema_registry: str,
) -> None:
    """Three files, two pods, types inferred once: one schema version in the registry, recorded
    in status with its id, and every row readable through it."""
    folder = data.path / "typed"
    folder.mkdir()
    counts = (4_000, 3_000, 5_000)
    first = 0
    for n, rows in enumerate(counts):
        _write(folder / f"part-{n}.csv", first, rows)
        first += rows
    topic = new_topic(partitions=3)
    source = {"url": data.url(folder) + "/",
              "volume": {"claimName": data.claim, "mountPath": data.mount_path}}
    body = ingestion("typed", source, topic, testenv.kafka_bootstrap,
                     format={"inferTypes": {"sampleRows": 1000}})
    body["spec"]["kafka"] |= {"valueFormat": "avro", "schemaRegistry": {"url": schema_registry}}
    body["spec"]["worker"] |= {"pods": 2}
    ingestions.create(body)
    st = ingestions.wait_phase("typed", "Completed", timeout=240)
    assert st["rowsPublished"] == sum(counts) and st["rowsFailed"] == 0, json.dumps(st)
    schema = st["schema"]
    assert schema["subject"] == f"{topic}-value" and schema["version"] == 1
    assert [(c["name"], c["type"], c.get("nullable", False)) for c in schema["columns"]] == [
        ("id", "int", False), ("price", "float", False), ("day", "date", False),
        ("note", "string", False)]
    versions = requests.get(f"{schema_registry}/subjects/{topic}-value/versions", timeout=10)
    assert versions.json() == [1]
    latest = requests.get(f"{schema_registry}/subjects/{topic}-value/versions/latest",
                          timeout=10).json()
    assert latest["id"] == schema["id"]
    paths = [folder / f"part-{n}.csv" for n in range(len(counts))]
    files = [SourceFile(f"{source['url']}{p.name}", local_version(str(p)), read=str(p))
             for p in paths]
    report = verify_many(files, topic, testenv.kafka_bootstrap,
                         CsvFormat(schema_registry=schema_registry), timeout=60)
    assert report.ok and report.rows_present == sum(counts), report.summary()


def test_a_schema_the_registry_refuses_fails_before_any_row(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
    new_topic: Callable[..., str], data: DataVolume, schema_registry: str,
    consume_all: Callable[..., list[Any]],
) -> None:
    """The subject already holds id as a boolean: the file's long is incompatible under
    BACKWARD. Failed, with the subject, the level and the registry's reason in status."""
    topic = new_topic(partitions=1)
    subject = f"{topic}-value"
    v1 = {"type": "record", "name": topic.replace("-", "_"), "namespace": "csvkafka",
          "fields": [{"name": "id", "type": "boolean"}]}
    got = requests.post(f"{schema_registry}/subjects/{subject}/versions",
                        json={"schema": json.dumps(v1)}, timeout=10)
    assert got.status_code == 200, got.text
    path = data.path / "ids.csv"
    path.write_text("id\n1\n2\n")
    body = ingestion("refused", data.source(path), topic, testenv.kafka_bootstrap,
                     format={"columnTypes": {"id": "int"}})
    body["spec"]["kafka"] |= {"valueFormat": "avro", "schemaRegistry": {"url": schema_registry}}
    ingestions.create(body)
    st = ingestions.wait_phase("refused", "Failed", timeout=120)
    assert f"subject {subject} (compatibility BACKWARD)" in st["message"], st["message"]
    assert "id: writer type boolean is not compatible" in st["message"], st["message"]
    assert st.get("rowsPublished", 0) == 0
    assert consume_all(topic, 0, timeout=5) == []


def test_the_registrys_credentials_come_from_a_secret(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv, namespace: str,
    kube_api: client.ApiClient, new_topic: Callable[..., str], data: DataVolume,
    secured_registry: SecuredRegistry,
) -> None:
    """schemaRegistry.secretRef: the worker pod reads username and password from the mounted
    Secret; with a wrong password the ingestion fails, saying where to look."""
    core = client.CoreV1Api(kube_api)
    for name, password in (("registry-auth", secured_registry.password), ("bad-auth", "nope")):
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": name},
            "stringData": {"username": secured_registry.username, "password": password}})
    path = data.path / "ids.csv"
    path.write_text("id\n1\n2\n")
    for name, secret in (("good", "registry-auth"), ("bad", "bad-auth")):
        body = ingestion(name, data.source(path), new_topic(partitions=1),
                         testenv.kafka_bootstrap)
        body["spec"]["kafka"] |= {"valueFormat": "avro", "schemaRegistry": {
            "url": secured_registry.url, "secretRef": {"name": secret}}}
        ingestions.create(body)
    st = ingestions.wait_phase("good", "Completed", timeout=120)
    assert st["rowsPublished"] == 2 and st["schema"]["version"] == 1
    st = ingestions.wait_phase("bad", "Failed", timeout=120)
    assert "refused the credentials (HTTP 401): check schemaRegistry.secretRef" in st["message"]


def test_a_column_type_the_crd_cannot_check_is_refused_in_status(
    operator: OperatorDeployment, ingestions: Ingestions, testenv: TestEnv,
) -> None:
    """A columnTypes entry is a type name or an object, which a structural schema cannot say:
    the API server keeps it, and the operator refuses the spec in status, naming the column."""
    body = ingestion("typo", "file:///data/x.csv", "t", testenv.kafka_bootstrap,
                     format={"columnTypes": {"price": {"type": "decimal", "format": "%Y"},
                                             "qty": "integer"}})
    ingestions.create(body)
    st = ingestions.wait_phase("typo", "Failed", timeout=60)
    assert "invalid spec: spec.format.columnTypes.price: Value error, format is for date and " \
           "timestamp columns, not decimal" in st["message"], st["message"]
    assert "spec.format.columnTypes.qty: Input should be 'string', 'int'" in st["message"]
    assert ingestions.jobs() == []
    assert any(e.startswith("Refused: ") for e in ingestions.events("typo"))
