"""``s3://BUCKET/KEY``: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto)."""

from __future__ import annotations

import re
from typing import Any

from ingest_worker.sources.base import (
    READ_BUFFER_BYTES,
    Environ,
    ObjectStat,
    Scheme,
    SourceError,
    cause,
    split_bucket_url,
)


def params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    # Explicit keys when the environment has them; otherwise boto3's default chain (web
    # identity token of IRSA / EKS Pod Identity, instance profile, ...).
    session = boto3.session.Session(
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        region_name=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
    )
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        # S3-compatible stores (MinIO, Ceph, moto) want bucket names in the path.
        s3={"addressing_style": "path"} if endpoint else None,
        connect_timeout=10,
        read_timeout=60,
    )
    client = session.client("s3", endpoint_url=endpoint, config=config)
    # defer_seek: no GET until the first read, so opening at an offset is one ranged GET.
    return {"client": client, "defer_seek": True, "buffer_size": READ_BUFFER_BYTES}


def stat(url: str, params: dict[str, Any]) -> ObjectStat:
    from botocore.exceptions import ClientError

    bucket, key = split_bucket_url(url)
    try:
        head = params["client"].head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        # A HEAD answers a bare 404 for a missing bucket too: ask the bucket to tell them apart.
        if e.response.get("Error", {}).get("Code") in ("404", "NotFound"):
            try:
                params["client"].head_bucket(Bucket=bucket)
            except ClientError as be:
                if be.response.get("Error", {}).get("Code") in ("404", "NotFound", "NoSuchBucket"):
                    raise SourceError(
                        f"source not found: {url}: the bucket does not exist"
                    ) from None
        raise
    version_id = head.get("VersionId")
    etag = str(head.get("ETag") or "").strip('"')
    # "null" is the version id of objects written while versioning was off.
    version = version_id if version_id and version_id != "null" else etag or None
    return ObjectStat(size=int(head["ContentLength"]), version=version)


def pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # An ETag is not a version id; unversioned buckets are checked by the probe only.
    if stat.version and not re.fullmatch(r"[0-9a-f]{32}(-\d+)?", stat.version):
        return {**params, "version_id": stat.version}
    return params

_S3_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion"}
_S3_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}
_S3_EXPIRED = {"ExpiredToken", "TokenRefreshRequired", "RequestExpired", "ExpiredTokenException"}
_S3_DENIED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled", "AccountProblem"}


def explain(url: str, exc: BaseException) -> str | None:
    try:
        from botocore import exceptions as be
    except ImportError:
        return None
    if isinstance(exc, be.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code == "NoSuchBucket":
            return f"source not found: {url}: the bucket does not exist"
        if code in _S3_NOT_FOUND or status == "404":
            return f"source not found: {url}: no such object"
        if code in _S3_EXPIRED:
            return f"access denied to {url}: the credentials have expired ({code})"
        if code in _S3_CREDENTIALS:
            return f"access denied to {url}: the credentials were rejected ({code})"
        if code in _S3_DENIED or status == "403":
            return f"access denied to {url}: the credentials lack permission to read it ({code})"
        return f"cannot read source {url}: S3 error {code or status}: {err.get('Message', '')}"
    if isinstance(exc, be.NoCredentialsError | be.PartialCredentialsError):
        return (
            f"no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            "source Secret, or give the worker a workload identity"
        )
    if isinstance(exc, be.EndpointConnectionError | be.ConnectTimeoutError):
        return f"cannot reach the S3 endpoint for {url}: {cause(exc)}"
    if isinstance(exc, be.BotoCoreError):
        return f"cannot read source {url}: {cause(exc)}"
    return None


SCHEME = Scheme("S3", params, stat, pin, explain)
