"""``s3://BUCKET/KEY``: Amazon S3 and S3-compatible stores (MinIO, Ceph, moto)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ingest_worker.sources.base import (
    READ_BUFFER_BYTES,
    Environ,
    ObjectStat,
    ReadRange,
    Scheme,
    SourceError,
    cause,
    changed,
    split_bucket_url,
    split_prefix_url,
)

_ETAG = re.compile(r"[0-9a-f]{32}(-\d+)?")
# Without s3:ListBucketVersions (or on a store without ListObjectVersions) the listing falls
# back to ListObjectsV2 and one HEAD per object, this many at a time.
_HEAD_THREADS = 16


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
    return ObjectStat(
        size=int(head["ContentLength"]), version=_version(head.get("VersionId"), head.get("ETag"))
    )


def _version(version_id: Any, etag: Any) -> str | None:
    """The version of an object, the same from a HEAD and from a listing: its version id in a
    versioned bucket, else its ETag."""
    # "null" is the version id of objects written while versioning was off.
    if version_id and version_id != "null":
        return str(version_id)
    return str(etag or "").strip('"') or None


def _is_etag(version: str) -> bool:
    return _ETAG.fullmatch(version) is not None


def pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # An ETag is not a version id; unversioned buckets are checked by the probe only.
    if stat.version and not _is_etag(stat.version):
        return {**params, "version_id": stat.version}
    return params


def list_objects(prefix_url: str, params: dict[str, Any]) -> Iterator[tuple[str, ObjectStat]]:
    """Every object under the prefix, with the version ``stat`` gives it.

    ListObjectsV2 gives ETags but no version ids, while ``stat`` gives the version id in a
    versioned bucket (an object written before versioning was enabled has none, so one HEAD
    cannot tell the bucket's state either). ListObjectVersions gives both, for versioned and
    unversioned buckets alike; where it is denied or not implemented, each object's own HEAD.
    """
    from botocore.exceptions import ClientError

    bucket, prefix = split_prefix_url(prefix_url)
    client = params["client"]
    pages = iter(client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                       Prefix=prefix))
    try:
        first = next(pages, None)
    except ClientError as e:
        if not _versions_unavailable(e):
            raise
        yield from _list_and_head(bucket, prefix, params)
        return
    for page in itertools.chain([first] if first is not None else [], pages):
        for v in page.get("Versions", ()):
            if v.get("IsLatest"):  # the older ones are not what a GET reads
                stat = ObjectStat(int(v["Size"]), _version(v.get("VersionId"), v.get("ETag")))
                yield f"s3://{bucket}/{v['Key']}", stat


def _versions_unavailable(e: Any) -> bool:
    code = str(e.response.get("Error", {}).get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("AccessDenied", "NotImplemented", "MethodNotAllowed") or status in (
        403, 405, 501)


def _list_and_head(
    bucket: str, prefix: str, params: dict[str, Any]
) -> Iterator[tuple[str, ObjectStat]]:
    from botocore.exceptions import ClientError

    def head(key: str) -> tuple[str, ObjectStat] | None:
        url = f"s3://{bucket}/{key}"
        try:
            return url, stat(url, params)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NotFound", "NoSuchKey"):
                return None  # deleted since the page was listed: not there to ingest
            raise

    paginator = params["client"].get_paginator("list_objects_v2")
    with ThreadPoolExecutor(_HEAD_THREADS) as pool:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys = [o["Key"] for o in page.get("Contents", ())]
            yield from (found for found in pool.map(head, keys) if found is not None)


def read_ranges(url: str, params: dict[str, Any], version: str) -> ReadRange:
    """Ranged GETs of that version: by version id, or If-Match on an ETag (412 if replaced)."""
    from botocore.exceptions import ClientError

    bucket, key = split_bucket_url(url)
    client = params["client"]  # boto3's low-level clients are thread-safe
    pinned = {"IfMatch": f'"{version}"'} if _is_etag(version) else {"VersionId": version}

    def read_range(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            resp = client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}", **pinned
            )
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code == "InvalidRange":  # at or past the end: nothing, as a file's read gives
                return b""
            if code in ("PreconditionFailed", "NoSuchVersion", "NoSuchKey", "404"):
                raise changed(url, version) from None
            raise
        data: bytes = resp["Body"].read()
        return data

    return read_range


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


SCHEME = Scheme("S3", params, stat, pin, explain, list=list_objects, ranges=read_ranges)
