"""Every source, end to end: a CsvIngestion with credentials from a Secret, the real operator,
the real Job controller, the worker in a container on the real node, and the real protocol
servers in the node's network namespace (moto, fake-gcs-server, Azurite, a Range-capable HTTP
server, a PersistentVolumeClaim).

The resume tests read the servers' request logs: the retried pod must ask for the bytes from
the checkpoint on (``Range: bytes=<byteOffset>-``), not the whole object again.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.conftest import TestEnv
from tests.node import DataVolume, kill_container
from tests.operator.conftest import OperatorDeployment, wait_for
from tests.operator.test_operator import Ingestions, distinct_ids, running_worker
from tests.sources.conftest import (
    AWS_KEY_ID,
    copy_into,
    csv_bytes,
    everything_said,
    secret_value,
    source_ingestion,
)
from tests.sources.servers import LoggingProxy, RangeFileServer, TokenServer, service_account_key

ROWS = 200_000
GZ_ROWS = 20_000
Consume = Callable[..., list[Any]]


def ingest_plain_and_gzip(
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    source: Callable[[str], dict[str, Any]],
    plain_size: int,
) -> dict[str, dict[str, Any]]:
    """Ingests ``rows.csv`` (200k rows) and ``rows.csv.gz`` (20k rows) of one store at once;
    checks every row arrived and returns the two final statuses."""
    topics = {"plain": new_topic(partitions=3), "gz": new_topic(partitions=3)}
    objects = {"plain": "rows.csv", "gz": "rows.csv.gz"}
    for kind in ("plain", "gz"):
        ingestions.create(
            source_ingestion(kind, source(objects[kind]), topics[kind], testenv.kafka_bootstrap)
        )
    out = {}
    for kind, rows in (("plain", ROWS), ("gz", GZ_ROWS)):
        st = ingestions.wait_phase(kind, "Completed", timeout=240)
        assert st["rowsPublished"] == rows, json.dumps(st, indent=1)
        assert distinct_ids(consume_all(topics[kind], rows, timeout=120)) == set(range(rows))
        assert st["sourceVersion"], st  # recorded by the first worker
        out[kind] = st
    # The size comes from the object's metadata and feeds the progress.
    assert out["plain"]["bytesTotal"] == plain_size and out["plain"]["progress"] == "100%"
    return out


# --- one store at a time: 200k rows and a gzip file ----------------------------------------------


def test_s3_with_keys_from_a_secret(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    s3_bucket: tuple[Any, str],
    s3_endpoint: str,
    csv_200k: Path,
    gz_20k: Path,
) -> None:
    s3, bucket = s3_bucket
    s3.upload_file(str(csv_200k), bucket, "rows.csv")
    s3.upload_file(str(gz_20k), bucket, "rows.csv.gz")
    secret = secret_value("aws")
    make_secret(
        "aws",
        {
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "eu-west-1",
        },
    )

    def source(key: str) -> dict[str, Any]:
        return {
            "url": f"s3://{bucket}/{key}",
            "secretRef": {"name": "aws"},
            "endpointUrl": s3_endpoint,
        }

    st = ingest_plain_and_gzip(
        ingestions, testenv, new_topic, consume_all, source, csv_200k.stat().st_size
    )
    etag = s3.head_object(Bucket=bucket, Key="rows.csv")["ETag"].strip('"')
    assert st["plain"]["sourceVersion"] == etag
    assert secret not in everything_said(ingestions, testenv, operator.log_text(), ["plain", "gz"])


def test_gcs_with_a_service_account_key_from_a_secret(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    gcs_bucket: Any,
    gcs_endpoint: str,
    csv_200k: Path,
    gz_20k: Path,
) -> None:
    gcs_bucket.blob("rows.csv").upload_from_filename(str(csv_200k))
    gcs_bucket.blob("rows.csv.gz").upload_from_filename(str(gz_20k))
    # The emulator has no OAuth endpoint: the key's token_uri points at ours, so the worker
    # really signs a JWT with the key from the Secret and exchanges it for a token.
    tokens = TokenServer().start()
    try:
        key = service_account_key(f"{tokens.url}/token")
        make_secret("gcp", {"GOOGLE_APPLICATION_CREDENTIALS_JSON": json.dumps(key)})

        def source(name: str) -> dict[str, Any]:
            return {
                "url": f"gs://{gcs_bucket.name}/{name}",
                "secretRef": {"name": "gcp"},
                "endpointUrl": gcs_endpoint,
            }

        st = ingest_plain_and_gzip(
            ingestions, testenv, new_topic, consume_all, source, csv_200k.stat().st_size
        )
    finally:
        tokens.stop()
    assert st["plain"]["sourceVersion"] == str(gcs_bucket.get_blob("rows.csv").generation)
    assert any(g.get("grant_type", "").startswith("urn") for g in tokens.grants), tokens.grants
    said = everything_said(ingestions, testenv, operator.log_text(), ["plain", "gz"])
    pem_body = key["private_key"].splitlines()[1]
    assert pem_body not in said and key["private_key_id"] not in said


def test_azure_with_a_connection_string_from_a_secret(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    azure_container: Any,
    azure_connection_string: str,
    csv_200k: Path,
    gz_20k: Path,
) -> None:
    for path, name in ((csv_200k, "rows.csv"), (gz_20k, "rows.csv.gz")):
        with path.open("rb") as f:
            azure_container.upload_blob(name, f)
    make_secret("azure", {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string})

    def source(name: str) -> dict[str, Any]:
        return {
            "url": f"azure://{azure_container.container_name}/{name}",
            "secretRef": {"name": "azure"},
        }

    st = ingest_plain_and_gzip(
        ingestions, testenv, new_topic, consume_all, source, csv_200k.stat().st_size
    )
    etag = azure_container.get_blob_client("rows.csv").get_blob_properties().etag.strip('"')
    assert st["plain"]["sourceVersion"] == etag
    account_key = azure_connection_string.split("AccountKey=")[1].split(";")[0]
    assert account_key not in everything_said(
        ingestions, testenv, operator.log_text(), ["plain", "gz"]
    )


def test_http_with_a_bearer_token_from_a_secret(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    http_root: Path,
    csv_200k: Path,
    gz_20k: Path,
) -> None:
    copy_into(csv_200k, http_root, "rows.csv")
    copy_into(gz_20k, http_root, "rows.csv.gz")
    token = secret_value("tok")
    server = RangeFileServer(root=http_root, bearer_token=token).start()
    try:
        make_secret("web", {"HTTP_BEARER_TOKEN": token})

        def source(name: str) -> dict[str, Any]:
            return {"url": f"{server.url}/{name}", "secretRef": {"name": "web"}}

        st = ingest_plain_and_gzip(
            ingestions, testenv, new_topic, consume_all, source, csv_200k.stat().st_size
        )
    finally:
        server.stop()
    assert st["plain"]["sourceVersion"].startswith('"')  # the strong ETag
    assert all(r.authorization for r in server.log) and all(r.status < 400 for r in server.log)
    assert token not in everything_said(ingestions, testenv, operator.log_text(), ["plain", "gz"])


def test_path_on_a_mounted_volume_claim(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    kube_api: client.ApiClient,
    namespace: str,
    data: DataVolume,
    csv_200k: Path,
    gz_20k: Path,
) -> None:
    # A hostPath PersistentVolume bound to the claim `data` (the node shares the host's disk).
    copy_into(csv_200k, data.path, "rows.csv")
    copy_into(gz_20k, data.path, "rows.csv.gz")

    def source(name: str) -> dict[str, Any]:
        return data.source(data.path / name)

    ingest_plain_and_gzip(
        ingestions, testenv, new_topic, consume_all, source, csv_200k.stat().st_size
    )
    job = client.BatchV1Api(kube_api).read_namespaced_job("plain-1", namespace)
    pod = job.spec.template.spec
    assert any(
        v.persistent_volume_claim and v.persistent_volume_claim.claim_name == data.claim
        for v in pod.volumes
    )
    (mount,) = [m for m in pod.containers[0].volume_mounts if m.name == "source"]
    assert mount.read_only and mount.mount_path == data.mount_path


# --- kill mid-file: the retry resumes with a ranged read -----------------------------------------


def kill_mid_file(ingestions: Ingestions, name: str) -> int:
    """Waits for a checkpoint inside the file, SIGKILLs the worker container's process and returns
    the checkpoint's byte offset the retry must resume from."""
    wait_for(
        "a checkpoint inside the file",
        lambda: (ingestions.status(name).get("checkpoint") or {}).get("row"),
        timeout=120,
        interval=0.05,
    )
    pod = wait_for("the worker's pod", lambda: running_worker(ingestions, f"{name}-1"), timeout=30)
    time.sleep(1.0)  # a few checkpoints in: resume well inside the file, not at its first chunk
    assert kill_container(ingestions.ns, pod, "worker"), "the worker was not running"
    time.sleep(0.5)  # a status write the worker had in flight lands before we read
    st = ingestions.status(name)
    assert st["checkpoint"]["row"] < BIG, "the file was done before the kill"
    offset: int = st["checkpoint"]["byteOffset"]
    return offset


RESUMABLE = {"checkpoint": {"everyRows": 10_000, "everySeconds": 1}}
BIG = 600_000
# The servers send 2 MB/s until the kill: the worker reads 8 MiB at a time, so the 14 MB file
# takes two reads and the first checkpoint comes long before its end.
THROTTLE = 2_000_000


def test_s3_killed_worker_resumes_with_a_range_request(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    s3_bucket: tuple[Any, str],
    s3_endpoint: str,
    csv_600k: Path,
) -> None:
    s3, bucket = s3_bucket
    s3.upload_file(str(csv_600k), bucket, "rows.csv")
    make_secret(
        "aws", {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret_value("k")}
    )
    proxy = LoggingProxy(upstream=s3_endpoint, bytes_per_second=THROTTLE).start()
    topic = new_topic(partitions=3)
    try:
        src = {
            "url": f"s3://{bucket}/rows.csv",
            "secretRef": {"name": "aws"},
            "endpointUrl": proxy.url,
        }
        ingestions.create(
            source_ingestion("resume", src, topic, testenv.kafka_bootstrap, **RESUMABLE)
        )
        offset = kill_mid_file(ingestions, "resume")
        proxy.bytes_per_second = None
        st = ingestions.wait_phase("resume", "Completed", timeout=240)
    finally:
        proxy.stop()
    assert st["attempts"] == 2 and st["rowsPublished"] == BIG, json.dumps(st, indent=1)
    assert offset > 0 and f"bytes={offset}-" in proxy.ranges(), (offset, proxy.ranges())
    # Only the header was read again from the top: no GET of the whole object after the kill.
    assert distinct_ids(consume_all(topic, BIG, timeout=180)) == set(range(BIG))


def test_http_killed_worker_resumes_with_a_range_request(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    http_root: Path,
    csv_600k: Path,
) -> None:
    copy_into(csv_600k, http_root, "rows.csv")
    password = secret_value("pw")
    server = RangeFileServer(
        root=http_root, basic=("ingest", password), bytes_per_second=THROTTLE
    ).start()
    make_secret("web", {"HTTP_USERNAME": "ingest", "HTTP_PASSWORD": password})
    topic = new_topic(partitions=3)
    try:
        src = {"url": f"{server.url}/rows.csv", "secretRef": {"name": "web"}}
        ingestions.create(
            source_ingestion("resume", src, topic, testenv.kafka_bootstrap, **RESUMABLE)
        )
        offset = kill_mid_file(ingestions, "resume")
        server.bytes_per_second = None
        st = ingestions.wait_phase("resume", "Completed", timeout=240)
    finally:
        server.stop()
    assert st["attempts"] == 2 and st["rowsPublished"] == BIG, json.dumps(st, indent=1)
    assert offset > 0 and f"bytes={offset}-" in server.ranges(), (offset, server.ranges())
    assert distinct_ids(consume_all(topic, BIG, timeout=180)) == set(range(BIG))
    said = everything_said(ingestions, testenv, operator.log_text(), ["resume"])
    assert (
        password not in said
        and base64.b64encode(f"ingest:{password}".encode()).decode() not in said
    )


# --- the object replaced between attempts ------------------------------------------------------


def test_s3_object_replaced_between_attempts_fails_the_ingestion(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    make_secret: Callable[[str, dict[str, str]], str],
    s3_bucket: tuple[Any, str],
    s3_endpoint: str,
    csv_600k: Path,
) -> None:
    s3, bucket = s3_bucket
    s3.upload_file(str(csv_600k), bucket, "rows.csv")
    make_secret(
        "aws", {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret_value("k")}
    )
    proxy = LoggingProxy(upstream=s3_endpoint, bytes_per_second=THROTTLE).start()
    topic = new_topic(partitions=3)
    url = f"s3://{bucket}/rows.csv"
    try:
        src = {"url": url, "secretRef": {"name": "aws"}, "endpointUrl": proxy.url}
        ingestions.create(
            source_ingestion("swap", src, topic, testenv.kafka_bootstrap, **RESUMABLE)
        )
        kill_mid_file(ingestions, "swap")
        # Another file under the same key: ids from 1,000,000 on.
        s3.put_object(Bucket=bucket, Key="rows.csv", Body=csv_bytes(1000, start=1_000_000))
        proxy.bytes_per_second = None
        st = ingestions.wait_phase("swap", "Failed", timeout=240)
    finally:
        proxy.stop()
    assert "source changed" in st["message"] and "onChange=Restart" in st["message"], st
    sent = consume_all(topic, 1, timeout=30)
    assert max(distinct_ids(sent)) < BIG, "rows of the new file were mixed in"


def test_http_file_replaced_between_attempts_restarts_from_zero(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    consume_all: Consume,
    http_root: Path,
    csv_600k: Path,
) -> None:
    path = copy_into(csv_600k, http_root, "rows.csv")
    server = RangeFileServer(root=http_root, bytes_per_second=THROTTLE).start()
    topic = new_topic(partitions=3)
    try:
        src = {"url": f"{server.url}/rows.csv", "onChange": "Restart"}
        ingestions.create(
            source_ingestion("swap", src, topic, testenv.kafka_bootstrap, **RESUMABLE)
        )
        kill_mid_file(ingestions, "swap")
        new = csv_bytes(5000, start=1_000_000)
        path.write_bytes(new)
        server.bytes_per_second = None
        st = ingestions.wait_phase("swap", "Completed", timeout=240)
    finally:
        server.stop()
    assert st["rowsPublished"] == 5000 and st["checkpoint"]["byteOffset"] == len(new), st
    ids = distinct_ids(consume_all(topic, 5000, timeout=60))
    assert set(range(1_000_000, 1_005_000)) <= ids  # the whole new file, from its first row


# --- clear failures, and no secret anywhere ----------------------------------------------------


def test_missing_object_fails_with_a_clear_message(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    make_secret: Callable[[str, dict[str, str]], str],
    s3_bucket: tuple[Any, str],
    s3_endpoint: str,
) -> None:
    _, bucket = s3_bucket
    secret = secret_value("aws")
    make_secret("aws", {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret})
    url = f"s3://{bucket}/nothing-here.csv"
    src = {"url": url, "secretRef": {"name": "aws"}, "endpointUrl": s3_endpoint}
    ingestions.create(source_ingestion("missing", src, new_topic(), testenv.kafka_bootstrap))
    st = ingestions.wait_phase("missing", "Failed", timeout=120)
    assert f"source not found: {url}: no such object" in st["message"], st
    assert st["attempts"] == 1  # a missing object is not retried
    assert secret not in everything_said(ingestions, testenv, operator.log_text(), ["missing"])


def test_wrong_credentials_fail_with_a_clear_message(
    operator: OperatorDeployment,
    ingestions: Ingestions,
    testenv: TestEnv,
    new_topic: Callable[..., str],
    make_secret: Callable[[str, dict[str, str]], str],
    azure_container: Any,
    azure_connection_string: str,
) -> None:
    azure_container.upload_blob("rows.csv", csv_bytes(10))
    # Azurite checks the shared-key signature: a wrong account key is rejected.
    wrong_key = base64.b64encode(secret_value("wrong").encode()).decode()
    real_key = azure_connection_string.split("AccountKey=")[1].split(";")[0]
    make_secret(
        "azure",
        {"AZURE_STORAGE_CONNECTION_STRING": azure_connection_string.replace(real_key, wrong_key)},
    )
    url = f"azure://{azure_container.container_name}/rows.csv"
    src = {"url": url, "secretRef": {"name": "azure"}}
    ingestions.create(source_ingestion("denied", src, new_topic(), testenv.kafka_bootstrap))
    st = ingestions.wait_phase("denied", "Failed", timeout=120)
    assert f"access denied to {url}" in st["message"], st
    said = everything_said(ingestions, testenv, operator.log_text(), ["denied"])
    assert wrong_key not in said and wrong_key[:40] not in said
