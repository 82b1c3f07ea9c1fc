"""``gs://BUCKET/OBJECT``: Google Cloud Storage (and its emulator)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ingest_worker.sources.base import (
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

GCS_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_only",)


def params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
    from google.cloud import storage

    endpoint = endpoint_url or environ.get("STORAGE_EMULATOR_HOST") or None
    key_json = environ.get("GOOGLE_APPLICATION_CREDENTIALS_JSON")
    credentials: Any
    project = environ.get("GOOGLE_CLOUD_PROJECT") or None
    if key_json:
        from google.oauth2 import service_account

        try:
            info = json.loads(key_json)
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(GCS_SCOPES)
            )
        except (ValueError, KeyError) as e:
            # The exception text may quote the key: name only what is wrong with it.
            raise SourceError(
                f"cannot use the GCS credentials for {url}: GOOGLE_APPLICATION_CREDENTIALS_JSON "
                f"is not a service-account key ({type(e).__name__})"
            ) from None
        project = project or info.get("project_id")
    elif endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]  # an emulator
        project = project or "emulator"
    else:
        credentials = None  # google.auth.default(): GOOGLE_APPLICATION_CREDENTIALS, workload id
    options = {"api_endpoint": endpoint} if endpoint else None
    client = storage.Client(project=project, credentials=credentials, client_options=options)
    return {"client": client}


def stat(url: str, params: dict[str, Any]) -> ObjectStat:
    bucket, name = split_bucket_url(url)
    blob = params["client"].bucket(bucket).get_blob(name)
    if blob is None:
        raise SourceError(f"source not found: {url}: no such object")
    return _stat(blob)


def _stat(blob: Any) -> ObjectStat:
    return ObjectStat(size=blob.size, version=str(blob.generation) if blob.generation else None)


def list_objects(prefix_url: str, params: dict[str, Any]) -> Iterator[tuple[str, ObjectStat]]:
    from google.api_core import exceptions as ge

    bucket, prefix = split_prefix_url(prefix_url)
    try:
        for blob in params["client"].list_blobs(bucket, prefix=prefix or None):
            yield f"gs://{bucket}/{blob.name}", _stat(blob)
    except ge.NotFound:  # a listing has no object to miss: its 404 is the bucket's
        raise SourceError(f"source not found: gs://{bucket}/: the bucket does not exist") from None


def read_ranges(url: str, params: dict[str, Any], version: str) -> ReadRange:
    """Ranged reads of that generation: a replaced object's old generation is gone (404)."""
    from google.api_core import exceptions as ge

    bucket_name, name = split_bucket_url(url)
    bucket = params["client"].bucket(bucket_name)
    try:
        generation = int(version)
    except ValueError:
        raise SourceError(f"bad version {version!r} of {url}: not a GCS generation") from None

    def read_range(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        # A Blob per read: a download writes the response's headers into its Blob.
        blob = bucket.blob(name, generation=generation)
        try:
            # The stored bytes (no transcoding), and no checksum: a range is never verified.
            data: bytes = blob.download_as_bytes(
                start=offset, end=offset + length - 1, raw_download=True, checksum=None
            )
        except ge.RequestRangeNotSatisfiable:  # at or past the end: nothing, as a file's read
            return b""
        except ge.NotFound:
            raise changed(url, version) from None
        return data

    return read_range


def pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    if stat.version:
        return {**params, "get_blob_kwargs": {"generation": int(stat.version)}}
    return params

def explain(url: str, exc: BaseException) -> str | None:
    try:
        from google.api_core import exceptions as ge
        from google.auth import exceptions as ae
    except ImportError:
        return None
    if isinstance(exc, ge.NotFound):
        what = "the bucket does not exist" if "bucket" in str(exc).lower() else "no such object"
        return f"source not found: {url}: {what}"
    if isinstance(exc, ge.Unauthorized):
        return f"access denied to {url}: the credentials were rejected (401)"
    if isinstance(exc, ge.Forbidden):
        return f"access denied to {url}: the credentials lack permission to read it (403)"
    if isinstance(exc, ae.RefreshError):
        return f"access denied to {url}: the credentials were rejected: {cause(exc)}"
    if isinstance(exc, ae.DefaultCredentialsError):
        return (
            f"no credentials for {url}: set GOOGLE_APPLICATION_CREDENTIALS_JSON in the source "
            "Secret, or give the worker a workload identity"
        )
    if isinstance(exc, ae.TransportError):
        return f"cannot reach the GCS endpoint for {url}: {cause(exc)}"
    if isinstance(exc, ge.GoogleAPICallError):
        return f"cannot read source {url}: GCS error {exc.code}: {exc.message}"
    return None



SCHEME = Scheme("GCS", params, stat, pin, explain, list=list_objects, ranges=read_ranges)
