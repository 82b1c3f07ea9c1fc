"""``azure://CONTAINER/BLOB``: Azure Blob Storage (and Azurite)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from ingest_worker.sources.base import (
    Environ,
    ObjectStat,
    ReadRange,
    Scheme,
    SourceError,
    cause,
    changed,
    no_pin,
    split_bucket_url,
    split_prefix_url,
)


def params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
    from azure.storage.blob import BlobServiceClient

    conn = environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if conn:
        try:
            return {"client": BlobServiceClient.from_connection_string(conn)}
        except ValueError:
            # Its message may quote the connection string.
            raise SourceError(
                f"cannot use the Azure credentials for {url}: "
                "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string"
            ) from None
    account = environ.get("AZURE_STORAGE_ACCOUNT")
    account_url = endpoint_url or environ.get("AZURE_STORAGE_ACCOUNT_URL")
    if not account_url and account:
        account_url = f"https://{account}.blob.core.windows.net"
    if not account_url:
        raise SourceError(
            f"no Azure account for {url}: set AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT (or AZURE_STORAGE_ACCOUNT_URL) with a key, a SAS token or "
            "workload identity"
        )
    credential: Any
    if environ.get("AZURE_STORAGE_KEY"):
        name = account or urlparse(account_url).netloc.split(".")[0]
        credential = {"account_name": name, "account_key": environ["AZURE_STORAGE_KEY"]}
    elif environ.get("AZURE_STORAGE_SAS_TOKEN"):
        credential = environ["AZURE_STORAGE_SAS_TOKEN"].lstrip("?")
    else:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise SourceError(
                f"no Azure credentials for {url}: no key or SAS token in the environment, and "
                "workload identity needs the azure-identity package"
            ) from None
        credential = DefaultAzureCredential()
    return {"client": BlobServiceClient(account_url=account_url, credential=credential)}


def stat(url: str, params: dict[str, Any]) -> ObjectStat:
    container, name = split_bucket_url(url)
    return _stat(params["client"].get_blob_client(container, name).get_blob_properties())


def _stat(props: Any) -> ObjectStat:
    # A listing gives the ETag bare, a HEAD in quotes: the version is the bare one.
    return ObjectStat(size=int(props.size), version=str(props.etag or "").strip('"') or None)


def list_objects(prefix_url: str, params: dict[str, Any]) -> Iterator[tuple[str, ObjectStat]]:
    container, prefix = split_prefix_url(prefix_url)
    blobs = params["client"].get_container_client(container).list_blobs(
        name_starts_with=prefix or None, include=["metadata"]
    )
    for props in blobs:
        # A directory of a hierarchical-namespace account (ADLS Gen2) is a blob without the
        # trailing "/" of other stores' folder markers: only its metadata tells.
        if (props.metadata or {}).get("hdi_isfolder") == "true":
            continue
        yield f"azure://{container}/{props.name}", _stat(props)


def read_ranges(url: str, params: dict[str, Any], version: str) -> ReadRange:
    """Ranged reads with If-Match on the ETag (412 once the blob is replaced)."""
    from azure.core import MatchConditions
    from azure.core import exceptions as ae

    container, name = split_bucket_url(url)
    blob = params["client"].get_blob_client(container, name)  # the SDK's clients are thread-safe
    etag = f'"{version}"'

    def read_range(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            data: bytes = blob.download_blob(
                offset=offset, length=length, etag=etag,
                match_condition=MatchConditions.IfNotModified, max_concurrency=1,
            ).readall()
        except (ae.ResourceModifiedError, ae.ResourceNotFoundError):
            raise changed(url, version) from None
        except ae.HttpResponseError as e:
            if e.status_code == 416:  # past the end: nothing, as a file's read gives
                return b""
            raise
        return data

    return read_range


def _azure_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # a StorageErrorCode enum or a plain string
    return str(code or getattr(exc, "status_code", "") or type(exc).__name__)


def explain(url: str, exc: BaseException) -> str | None:
    try:
        from azure.core import exceptions as ae
    except ImportError:
        return None
    if isinstance(exc, ae.ResourceNotFoundError):
        code = _azure_code(exc)
        what = "the container does not exist" if code == "ContainerNotFound" else "no such blob"
        return f"source not found: {url}: {what}"
    if isinstance(exc, ae.ClientAuthenticationError):
        code = _azure_code(exc)
        return f"access denied to {url}: the credentials were rejected ({code})"
    if isinstance(exc, ae.ServiceRequestError):
        return f"cannot reach the Azure Blob endpoint for {url}: {cause(exc)}"
    if isinstance(exc, ae.HttpResponseError):
        code = _azure_code(exc)
        if getattr(exc, "status_code", None) == 403:
            return (
                f"access denied to {url}: the credentials were rejected or lack permission "
                f"to read it ({code})"
            )
        return f"cannot read source {url}: Azure error {code}: {exc.reason}"
    return None



SCHEME = Scheme(
    "Azure Blob", params, stat, no_pin, explain, list=list_objects, ranges=read_ranges
)
