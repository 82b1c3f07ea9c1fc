"""The planner's reads of a source (issue 12): the files a prefix or a glob names, and ranged
reads pinned to a version, against the environment's real stores (moto, fake-gcs-server,
Azurite), a Range-capable HTTP server and local directories.

Only the stores are needed, not the operator: the endpoints come from the running environment's
env file, and the session's ``testenv`` (which brings the environment up) is used only when
there is none.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest_worker.plan.shards import SplitDialect, plan_shards
from ingest_worker.sources import CsvSource, SourceError, s3
from ingest_worker.sources.listing import list_files, range_reader
from tests.conftest import ROOT, _read_env_file
from tests.sources.conftest import AWS_KEY_ID, csv_bytes
from tests.sources.servers import RangeFileServer

# Every size differs, so a size taken from the wrong object shows.
TREE = {
    "data/a.csv": csv_bytes(3),
    "data/b.csv": csv_bytes(5),
    "data/c.csv.gz": gzip.compress(csv_bytes(7)),
    "data/part-1.csv": csv_bytes(11),
    "data/part-2.csv": csv_bytes(13),
    "data/part-12.csv": csv_bytes(17),
    "data/part-x.csv": csv_bytes(19),
    "data/old/a.csv": csv_bytes(23),
    "data/old/deep/z.csv": csv_bytes(29),
    "data-2026.csv": csv_bytes(31),
    "other/q.csv": csv_bytes(37),
}
# Zero-byte "folder" objects some consoles make (a local directory is not one).
MARKERS = ["data/", "data/old/", "empty/"]
UNDER_DATA = sorted(n for n in TREE if n.startswith("data/"))
SELECTIONS = {
    "data/": UNDER_DATA,  # at any depth
    "data/*.csv": ["data/a.csv", "data/b.csv", "data/part-1.csv", "data/part-12.csv",
                   "data/part-2.csv", "data/part-x.csv"],  # not data/old/a.csv: * stops at /
    "data/part-?.csv": ["data/part-1.csv", "data/part-2.csv", "data/part-x.csv"],
    "data/[a-c].csv*": ["data/a.csv", "data/b.csv", "data/c.csv.gz"],
    "data/part-[!0-9].csv": ["data/part-x.csv"],
    "data/*/a.csv": ["data/old/a.csv"],
    "data*": ["data-2026.csv"],  # lists from "data", which data/... shares, but * stops at /
    "data/a.csv": ["data/a.csv"],  # one file
}
QUOTED = SplitDialect(ord(","), ord('"'), None, quoted_newlines=True)


# --- the stores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment's endpoints: from its env file when it runs (no `up` from here, which
    would rebuild the image of a changed tree), else from the session's ``testenv``."""
    env_file = Path(os.environ.get("CSVKAFKA_TESTENV", ROOT / ".testenv")) / "env"
    if env_file.exists():
        return _read_env_file(env_file)
    environ: dict[str, str] = request.getfixturevalue("testenv").environ
    return environ


@dataclass
class Store:
    kind: str
    base: str
    """The URL every name is written under (ends in "/")."""
    put: Callable[[str, bytes], None]
    """Writes (or replaces) an object; a name ending in "/" is a folder marker."""
    endpoint: str | None = None

    def url(self, name: str) -> str:
        return self.base + name

    def fill(self, tree: dict[str, bytes], markers: list[str] = MARKERS) -> None:
        for name in markers:
            self.put(name, b"")
        for name, data in tree.items():
            self.put(name, data)


@dataclass
class S3Store(Store):
    client: Any = None
    bucket: str = ""


def local_store(root: Path, kind: str) -> Store:
    def put(name: str, data: bytes) -> None:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    base = f"{root}/" if kind == "path" else f"file://{root}/"
    return Store(kind, base, put)


@pytest.fixture
def s3_store(store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> S3Store:
    import boto3

    endpoint = store_env["CSVKAFKA_S3_ENDPOINT"]
    # CsvSource reads its credentials from the process environment, as the worker does.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "admin")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AWS_KEY_ID,
                          aws_secret_access_key="admin", region_name="us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)

    def put(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=name, Body=data)

    return S3Store("s3", f"s3://{bucket}/", put, endpoint, client, bucket)


@pytest.fixture
def store(
    request: pytest.FixtureRequest, tmp_path: Path, store_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Store]:
    kind: str = request.param
    if kind in ("path", "file"):
        yield local_store(tmp_path / "files", kind)
    elif kind == "s3":
        yield request.getfixturevalue("s3_store")
    elif kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        endpoint = store_env["CSVKAFKA_GCS_ENDPOINT"]
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        gcs = storage.Client(project="test-project", credentials=anonymous,
                             client_options={"api_endpoint": endpoint})
        bucket = gcs.create_bucket(f"b-{uuid.uuid4().hex[:12]}")

        def put_gcs(name: str, data: bytes) -> None:
            bucket.blob(name).upload_from_string(data)

        yield Store(kind, f"gs://{bucket.name}/", put_gcs, endpoint)
    elif kind == "azure":
        from azure.storage.blob import BlobServiceClient

        conn = store_env["CSVKAFKA_AZURE_CONNECTION_STRING"]
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
        container = BlobServiceClient.from_connection_string(conn).create_container(
            f"c-{uuid.uuid4().hex[:12]}")

        def put_azure(name: str, data: bytes) -> None:
            container.upload_blob(name, data, overwrite=True)

        yield Store(kind, f"azure://{container.container_name}/", put_azure)
        container.delete_container()
    elif kind == "http":
        root = tmp_path / "www"
        server = RangeFileServer(root=root).start()
        local = local_store(root, "path")
        yield Store(kind, f"{server.url}/", local.put)
        server.stop()
    else:
        raise AssertionError(kind)


LISTABLE = ["path", "file", "s3", "gcs", "azure"]
RANGED = [*LISTABLE, "http"]


def name_of(store: Store, url: str) -> str:
    assert url.startswith(store.base), url
    return url[len(store.base):]


# --- listing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", LISTABLE, indirect=True)
def test_prefixes_and_globs_list_the_files_with_the_versions_a_probe_finds(store: Store) -> None:
    store.fill(TREE)
    probed: dict[str, CsvSource] = {}
    for pattern, expected in SELECTIONS.items():
        files = list_files(store.url(pattern), store.endpoint)
        assert [name_of(store, f.url) for f in files] == expected, pattern
        for f in files:
            # The version a worker's probe finds for the unchanged object: the plan's check.
            src = probed.setdefault(f.url, CsvSource(f.url, endpoint_url=store.endpoint))
            assert (f.version, f.size) == (src.version, src.stored_size), f.url
            assert f.size == len(TREE[name_of(store, f.url)])
            assert f.compressed == f.url.endswith(".gz")
            assert f.version


@pytest.mark.parametrize("store", LISTABLE, indirect=True)
def test_nothing_matches_says_what_was_listed(store: Store) -> None:
    store.fill(TREE)
    url = store.url("nothing/*.csv")
    with pytest.raises(SourceError) as e:
        list_files(url, store.endpoint)
    assert str(e.value) == f"no file matches {url}: nothing is stored under {store.url('nothing/')}"

    url = store.url("data/*.txt")
    with pytest.raises(SourceError) as e:
        list_files(url, store.endpoint)
    assert str(e.value).startswith(f"no file matches {url}: objects under {store.url('data/')} "
                                   f"(such as {store.url('data/')}")
    assert "* and ? never match a /" in str(e.value)

    url = store.url("empty/")  # a folder marker alone (a bare directory, locally)
    with pytest.raises(SourceError, match=f"^{re.escape(f'no file matches {url}: ')}"):
        list_files(url, store.endpoint)


@pytest.mark.parametrize("store", ["s3", "azure"], indirect=True)
def test_folder_markers_are_not_files(store: Store) -> None:
    # fake-gcs-server does not keep "dir/" objects; S3 and Azurite do, as GCS itself does.
    store.fill({"data/a.csv": TREE["data/a.csv"]}, markers=["data/", "data/sub/"])
    files = list_files(store.url("data/"), store.endpoint)
    assert [f.url for f in files] == [store.url("data/a.csv")]
    url = store.url("data/sub/")
    with pytest.raises(SourceError) as e:
        list_files(url, store.endpoint)
    assert str(e.value) == (f"no file matches {url}: only folder markers (such as {url}) are "
                            f"under {url}")


def test_azure_directories_of_a_hierarchical_namespace_are_not_files(
    store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    conn = store_env["CSVKAFKA_AZURE_CONNECTION_STRING"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    container = BlobServiceClient.from_connection_string(conn).create_container(
        f"c-{uuid.uuid4().hex[:12]}")
    try:
        container.upload_blob("data/dir", b"", metadata={"hdi_isfolder": "true"})
        container.upload_blob("data/dir/a.csv", TREE["data/a.csv"])
        base = f"azure://{container.container_name}/"
        assert [f.url for f in list_files(base + "data/")] == [base + "data/dir/a.csv"]
    finally:
        container.delete_container()


def test_s3_versions_agree_with_a_probe_in_a_versioned_bucket(s3_store: S3Store) -> None:
    client, bucket = s3_store.client, s3_store.bucket
    s3_store.put("v/before.csv", csv_bytes(3))  # no version id: its ETag is its version
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3_store.put("v/twice.csv", csv_bytes(5))
    s3_store.put("v/twice.csv", csv_bytes(7))
    s3_store.put("v/gone.csv", csv_bytes(9))
    client.delete_object(Bucket=bucket, Key="v/gone.csv")  # a delete marker: not listed

    url = s3_store.url("v/")
    files = list_files(url, s3_store.endpoint)
    assert [name_of(s3_store, f.url) for f in files] == ["v/before.csv", "v/twice.csv"]
    for f in files:
        src = CsvSource(f.url, endpoint_url=s3_store.endpoint)
        assert (f.version, f.size) == (src.version, src.stored_size)
    head = client.head_object(Bucket=bucket, Key="v/twice.csv")
    assert files[1].version == head["VersionId"] != head["ETag"].strip('"')
    assert files[0].version == client.head_object(Bucket=bucket, Key="v/before.csv")[
        "ETag"].strip('"')

    # Without s3:ListBucketVersions: ListObjectsV2 and a HEAD per object, the same versions.
    params = s3.params(url, s3_store.endpoint, os.environ)

    def deny(**kwargs: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "ListObjectVersions")

    params["client"].meta.events.register("before-call.s3.ListObjectVersions", deny)
    assert s3.SCHEME.list is not None
    listed = sorted(s3.SCHEME.list(url, params))
    assert [(u, st.version, st.size) for u, st in listed] == [
        (f.url, f.version, f.size) for f in files]


def test_http_names_one_file() -> None:
    for url in ("http://files.invalid/exports/", "https://files.invalid/exports/*.csv"):
        with pytest.raises(SourceError) as e:
            list_files(url)
        scheme = url.partition(":")[0]
        assert str(e.value) == (f"cannot list {url}: {scheme} sources name one file; a prefix "
                                "or glob needs s3://, gs://, azure:// or a path")


@pytest.mark.parametrize("store", ["http"], indirect=True)
def test_an_http_query_is_not_a_glob(store: Store) -> None:
    store.put("f.csv", csv_bytes(3))
    url = store.url("f.csv?sig=abc")
    (f,) = list_files(url)
    assert (f.url, f.version, f.size) == (url, CsvSource(url).version, len(csv_bytes(3)))
    assert f.version.startswith('"')  # the server's strong ETag


def test_a_bucket_is_named_in_full() -> None:
    with pytest.raises(SourceError, match="names its bucket in full"):
        list_files("s3://logs-*/x.csv")


@pytest.mark.parametrize("store", ["s3", "gcs", "azure"], indirect=True)
def test_a_missing_bucket_is_named(store: Store) -> None:
    scheme = store.base.partition("://")[0]
    bucket = f"no-such-{uuid.uuid4().hex[:8]}"
    url = f"{scheme}://{bucket}/p/*.csv"
    with pytest.raises(SourceError) as e:
        list_files(url, store.endpoint)
    what = "container" if scheme == "azure" else "bucket"
    assert str(e.value).startswith(f"source not found: {scheme}://{bucket}/")
    assert str(e.value).endswith(f"the {what} does not exist")
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no SDK error chained


def test_sdk_errors_are_scrubbed(s3_store: Store) -> None:
    secret = f"sk{uuid.uuid4().hex}"
    env = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_REGION": "us-east-1"}
    url = s3_store.url("p/*.csv")
    # A refused connection: botocore's own words, which quote the endpoint, go through scrub.
    with pytest.raises(SourceError) as e:
        list_files(url, f"http://127.0.0.1:9/{secret}", environ=env)
    assert str(e.value).startswith(f"cannot reach the S3 endpoint for {url}: ")
    assert secret not in str(e.value) and "***" in str(e.value)


# --- ranged reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("store", RANGED, indirect=True)
def test_ranged_reads_are_the_slices_from_many_threads(store: Store) -> None:
    data = csv_bytes(5_000)
    store.put("big.csv", data)
    (f,) = list_files(store.url("big.csv"), store.endpoint)
    read = range_reader(f.url, f.version, store.endpoint)
    size = len(data)
    for offset, length in [(0, 10), (100, 1000), (size - 7, 100), (size, 10), (5, 0)]:
        assert read(offset, length) == data[offset:offset + length], (offset, length)

    rnd = random.Random(12)
    ranges = [(rnd.randrange(size), rnd.randrange(1, 20_000)) for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: read(*r), ranges))
    assert got == [data[o:o + n] for o, n in ranges]


@pytest.mark.parametrize("store", RANGED, indirect=True)
def test_a_replaced_object_fails_the_reads_pinned_to_its_version(store: Store) -> None:
    data = csv_bytes(1_000)
    store.put("f.csv", data)
    url = store.url("f.csv")
    (f,) = list_files(url, store.endpoint)
    read = range_reader(url, f.version, store.endpoint)
    assert read(0, 10) == data[:10]

    store.put("f.csv", csv_bytes(1_200, start=1_000_000))  # another file under the same name
    with pytest.raises(SourceError) as e:
        read(0, 10)  # the reader in use
    assert str(e.value).startswith(f"source changed: {url} is no longer version {f.version}")
    with pytest.raises(SourceError, match=r"^source changed: "):
        range_reader(url, f.version, store.endpoint)(0, 10)  # a reader taken later


def test_s3_versioned_reads_stay_on_the_listed_version(s3_store: S3Store) -> None:
    s3_store.client.put_bucket_versioning(Bucket=s3_store.bucket,
                                          VersioningConfiguration={"Status": "Enabled"})
    data = csv_bytes(1_000)
    s3_store.put("f.csv", data)
    (f,) = list_files(s3_store.url("f.csv"), s3_store.endpoint)
    read = range_reader(f.url, f.version, s3_store.endpoint)
    s3_store.put("f.csv", csv_bytes(1_200, start=1_000_000))
    # The plan is taken over the version listed; the workers' probe sees the new one.
    assert read(0, 100) == data[:100]
    assert CsvSource(f.url, endpoint_url=s3_store.endpoint).version != f.version


def quoted_newlines_csv(rows: int) -> bytes:
    lines = ["id,note,amount"]
    for i in range(rows):
        note = f'"line {i}\nstill ""{i}"", quoted\r\nend"' if i % 3 == 0 else f"plain {i}"
        lines.append(f"{i},{note},{i % 7}.5")
    return ("\n".join(lines) + "\n").encode()


def test_plan_shards_over_s3_finds_the_starts_it_finds_locally(s3_store: Store) -> None:
    data = quoted_newlines_csv(300)
    s3_store.put("quoted.csv", data)
    (f,) = list_files(s3_store.url("quoted.csv"), s3_store.endpoint)
    remote = plan_shards(range_reader(f.url, f.version, s3_store.endpoint), f.size, QUOTED,
                         shard_bytes=512, block_bytes=200)
    local = plan_shards(lambda o, n: data[o:o + n], len(data), QUOTED, shard_bytes=512,
                        block_bytes=200)
    assert remote == local and remote.reason is None
    assert len(remote.starts) > 10
    # Every start is right after a record's newline, never inside a quoted one.
    assert all(data[s - 1:s] == b"\n" and data[s:s + 1].isdigit() for s in remote.starts[1:])
