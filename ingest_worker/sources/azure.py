"""``azure://CONTAINER/BLOB``: Azure Blob Storage (and Azurite)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from ingest_worker.sources.base import (
    Environ,
    ObjectStat,
    Scheme,
    SourceError,
    cause,
    no_pin,
    split_bucket_url,
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
    props = params["client"].get_blob_client(container, name).get_blob_properties()
    return ObjectStat(size=int(props.size), version=str(props.etag or "").strip('"') or None)


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



SCHEME = Scheme("Azure Blob", params, stat, no_pin, explain)
