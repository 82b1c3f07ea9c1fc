"""Fast tests of the pure parts: scrubbing, error classification, the Job's source access."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from ingest_operator import builders
from pydantic import ValidationError

from ingest_worker.api.spec import CsvIngestionSpec, Source
from ingest_worker.sources import ScrubbingFormatter, describe, s3, scrub

URL = "s3://bucket/dump.csv"
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAUNITTEST",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=c2VjcmV0a2V5;EndpointSuffix=x",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON": json.dumps(
        {"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEabc\n-----END PRIVATE KEY-----\n"}
    ),
    "HTTP_BEARER_TOKEN": "tok-123456",
}


def test_scrub_removes_every_credential_value_and_secret_pattern() -> None:
    text = (
        f"key {ENV['AWS_SECRET_ACCESS_KEY']} id {ENV['AWS_ACCESS_KEY_ID']} "
        f"conn {ENV['AZURE_STORAGE_CONNECTION_STRING']} "
        "key-json -----BEGIN PRIVATE KEY-----\\nMIIEabc\\n-----END PRIVATE KEY-----\\n "
        "pem -----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY----- "
        "url https://a.blob.core.windows.net/c/b?sv=2020&sig=abc%2Bdef&se=1 "
        "{'Authorization': 'Bearer tok-123456'} AccountKey=other;"
    )
    out = scrub(text, ENV)
    for leaked in ("EXAMPLEKEY", "AKIAUNITTEST", "c2VjcmV0a2V5", "MIIEabc", "abc%2Bdef", "tok-1"):
        assert leaked not in out, out
    assert "sig=***" in out and "AccountKey=***" in out


def test_log_output_is_scrubbed_tracebacks_included(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    fmt = ScrubbingFormatter(logging.Formatter("%(message)s"))
    try:
        raise RuntimeError(f"boom {ENV['HTTP_BEARER_TOKEN']}")
    except RuntimeError:
        record = logging.LogRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "with %s",
            (ENV["AWS_SECRET_ACCESS_KEY"],),
            sys.exc_info(),
        )
    out = fmt.format(record)
    assert "RuntimeError" in out
    assert ENV["HTTP_BEARER_TOKEN"] not in out and ENV["AWS_SECRET_ACCESS_KEY"] not in out


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, "source not found: s3://bucket/dump.csv: no such object"),
        ("NoSuchBucket", 404, "the bucket does not exist"),
        ("InvalidAccessKeyId", 403, "the credentials were rejected (InvalidAccessKeyId)"),
        ("SignatureDoesNotMatch", 403, "the credentials were rejected"),
        ("ExpiredToken", 400, "the credentials have expired (ExpiredToken)"),
        ("AccessDenied", 403, "lack permission to read it (AccessDenied)"),
    ],
)
def test_s3_errors_name_the_url_and_the_cause(code: str, status: int, expected: str) -> None:
    msg = str(describe(URL, _client_error(code, status), ENV))
    assert expected in msg and URL in msg


def test_unreachable_endpoint_and_missing_credentials() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    msg = str(describe(URL, EndpointConnectionError(endpoint_url="http://h:1"), ENV))
    assert msg.startswith(f"cannot reach the S3 endpoint for {URL}")
    assert "no credentials for" in str(describe(URL, NoCredentialsError(), ENV))


def test_azure_gcs_and_http_errors() -> None:
    import requests
    from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
    from google.api_core.exceptions import Forbidden, NotFound

    az = "azure://c/b.csv"
    assert "no such blob" in str(describe(az, ResourceNotFoundError("x"), ENV))
    assert f"access denied to {az}" in str(describe(az, ClientAuthenticationError("x"), ENV))
    gs = "gs://b/o.csv"
    assert f"source not found: {gs}" in str(describe(gs, NotFound("x"), ENV))  # type: ignore[no-untyped-call]
    assert "lack permission" in str(describe(gs, Forbidden("x"), ENV))  # type: ignore[no-untyped-call]
    web = "https://h/f.csv"
    for status, expected in ((404, "source not found"), (401, "access denied"), (412, "changed")):
        resp = requests.Response()
        resp.status_code = status
        assert expected in str(describe(web, requests.HTTPError(response=resp), ENV))


def test_an_sdk_message_quoting_a_secret_is_scrubbed() -> None:
    exc = ValueError(f"bad key {ENV['AWS_SECRET_ACCESS_KEY']}")
    msg = str(describe(URL, exc, ENV))
    assert URL in msg and ENV["AWS_SECRET_ACCESS_KEY"] not in msg


def test_s3_pins_only_real_version_ids() -> None:
    from ingest_worker.sources import ObjectStat

    etag = ObjectStat(size=1, version="9b2cf535f27731c974343645a3985328")
    assert "version_id" not in s3.pin({}, etag)
    vid = ObjectStat(size=1, version="3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
    assert s3.pin({}, vid)["version_id"] == vid.version


def test_an_unknown_scheme_is_refused_by_name() -> None:
    from ingest_worker.sources import CsvSource, SourceError, scheme_for

    for url in ("ftp://host/data.csv", "hdfs://nn/data.csv", "webhdfs://nn/d.csv"):
        with pytest.raises(SourceError, match=r"unsupported source URL .* scheme \w+://"):
            CsvSource(url)
    with pytest.raises(SourceError, match="s3://, gs://, azure://"):
        scheme_for("sftp://h/x.csv")
    # A plain path, a Windows drive letter and file:// are local files, not schemes.
    for url in ("data/x.csv", "C:/data/x.csv", "file:///data/x.csv"):
        assert scheme_for(url).name == "local file"


def _spec(**source: object) -> CsvIngestionSpec:
    return CsvIngestionSpec.model_validate(
        {"source": source, "kafka": {"bootstrapServers": "k:9092", "topic": "t"}}
    )


def test_job_gets_the_secret_as_env_and_files_and_nothing_without_it() -> None:
    env_from, volumes, mounts = builders.source_access(
        _spec(url="gs://b/o.csv", secretRef={"name": "gcp"})
    )
    assert env_from == [{"secretRef": {"name": "gcp"}}]
    assert volumes == [{"name": "source-secret", "secret": {"secretName": "gcp"}}]
    assert mounts[0]["mountPath"] == builders.SOURCE_SECRET_DIR and mounts[0]["readOnly"]
    # Workload identity: no Secret, nothing added; the SDK's default chain applies.
    assert builders.source_access(_spec(url="s3://b/k.csv")) == ([], [], [])


def test_a_volume_claim_is_mounted_read_only() -> None:
    s = _spec(url="/dumps/x/rows.csv", volume={"claimName": "dumps", "mountPath": "/dumps"})
    job = builders.build_job("a", "ns", s, run=1, generation=1, default_image="img")
    pod = job["spec"]["template"]["spec"]
    assert {
        "name": "source",
        "persistentVolumeClaim": {"claimName": "dumps", "readOnly": True},
    } in (pod["volumes"])
    assert {"name": "source", "mountPath": "/dumps", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"]
    )
    with pytest.raises(ValidationError, match=r"not under volume\.mountPath"):
        Source.model_validate({"url": "/etc/passwd", "volume": {"claimName": "dumps"}})


def test_a_replaced_object_may_restart_the_checkpoint_from_zero() -> None:
    # onChange: Restart starts the new version from zero: that is not a checkpoint moving back.
    from ingest_worker.checkpoint import Checkpoint, Counters
    from ingest_worker.checkpoint.kube import is_behind

    stored = {"sourceUrl": URL, "sourceVersion": "v1", "checkpoint": {"byteOffset": 5000}}

    def at(offset: int, version: str) -> Checkpoint:
        return Checkpoint(offset, 1, 3, URL, version, Counters(bytes_read=offset))

    assert is_behind(stored, at(100, "v1"))
    assert not is_behind(stored, at(100, "v2"))
