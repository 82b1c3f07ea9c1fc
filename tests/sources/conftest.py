"""Fixtures for the source tests: the operator's integration fixtures (its Deployment) plus
clients of the object-store servers the test environment runs in the node's network namespace
(moto for S3, fake-gcs-server for GCS, Azurite for Azure Blob)."""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import TestEnv
from tests.node import pod_logs
from tests.operator.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    crd_installed,
    operator,
    operator_deployment,
    operator_kubeconfig,
    pytest_runtest_makereport,
    write_csv,
)
from tests.operator.test_operator import Ingestions, ingestions  # noqa: F401

# moto accepts any key; these stand for a user's real ones, and the tests grep for them.
AWS_KEY_ID = "AKIATESTSOURCEKEY001"


def secret_value(prefix: str) -> str:
    """A credential value unique to one test, so a grep for it can only find a leak."""
    return f"{prefix}{uuid.uuid4().hex}{uuid.uuid4().hex}"


def csv_bytes(rows: int, start: int = 0) -> bytes:
    lines = ["id,name,amount"] + [f"{i},name-{i},{i % 1000}.5" for i in range(start, start + rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source-data")


@pytest.fixture(scope="session")
def csv_200k(data_dir: Path) -> Path:
    """The 200,000-row file every store serves (about 5 MB)."""
    return write_csv(data_dir / "rows-200k.csv", 200_000)


@pytest.fixture(scope="session")
def csv_600k(data_dir: Path) -> Path:
    """For the kill tests: bigger than the worker's 8 MiB reads, so a kill lands mid-file."""
    return write_csv(data_dir / "rows-600k.csv", 600_000)


@pytest.fixture(scope="session")
def gz_20k(data_dir: Path) -> Path:
    path = data_dir / "rows-20k.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes(20_000)))
    return path


# --- the stores' clients -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint(testenv: TestEnv) -> str:
    return testenv.environ["CSVKAFKA_S3_ENDPOINT"]


@pytest.fixture(scope="session")
def gcs_endpoint(testenv: TestEnv) -> str:
    return testenv.environ["CSVKAFKA_GCS_ENDPOINT"]


@pytest.fixture(scope="session")
def azure_connection_string(testenv: TestEnv) -> str:
    return testenv.environ["CSVKAFKA_AZURE_CONNECTION_STRING"]


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[Any, str]]:
    """(boto3 client, fresh bucket name)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key="admin",
        region_name="us-east-1",
    )
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    yield s3, bucket


@pytest.fixture
def gcs_bucket(gcs_endpoint: str) -> Iterator[Any]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_endpoint},
    )
    yield gcs.create_bucket(f"b-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def azure_container(azure_connection_string: str) -> Iterator[Any]:
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(azure_connection_string)
    container = svc.create_container(f"c-{uuid.uuid4().hex[:12]}")
    yield container
    container.delete_container()


@pytest.fixture
def http_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


def copy_into(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


# --- Kubernetes helpers ------------------------------------------------------------------------


@pytest.fixture
def make_secret(kube_api: client.ApiClient, namespace: str) -> Callable[[str, dict[str, str]], str]:
    core = client.CoreV1Api(kube_api)

    def create(name: str, data: dict[str, str]) -> str:
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data),
        )
        return name

    return create


def source_ingestion(
    name: str, source: dict[str, Any], topic: str, bootstrap: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "csvkafka.io/v1alpha1",
        "kind": "CsvIngestion",
        "metadata": {"name": name},
        "spec": {
            "source": source,
            "kafka": {"bootstrapServers": bootstrap, "topic": topic},
            "worker": {"parallelism": 2, "backoffLimit": 3},
            **spec,
        },
    }


def everything_said(ings: Ingestions, testenv: TestEnv, operator_log: str, names: list[str]) -> str:
    """Status, events, the workers' logs and the operator's log: where a leak would show."""
    parts = [operator_log]
    for name in names:
        parts.append(json.dumps(ings.get(name)))
    evs = ings.core.list_namespaced_event(ings.ns).items
    parts += [f"{e.reason} {e.message}" for e in evs]
    for pod in ings.core.list_namespaced_pod(ings.ns).items:
        parts.append(json.dumps(client.ApiClient().sanitize_for_serialization(pod.status)))
    parts.append(pod_logs(ings.core.api_client, ings.ns, "job-name"))
    return "\n".join(parts)
