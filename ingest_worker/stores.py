"""Object stores behind source URLs: credentials, object metadata, ranged reads, clear errors.

One :class:`Store` per URL scheme (``s3``, ``gs``, ``azure``, ``http``/``https``), each with
the same small contract:

``params(url, endpoint_url, environ)``
    The smart-open transport parameters (an SDK client built from the credentials in the
    environment, in each cloud's conventional variables; the SDK's default chain, e.g. workload
    identity, when there are none). Nothing is read here.
``stat(url, params)``
    Size and version of the object from its metadata, without reading it: S3 version id (or
    ETag), GCS generation, Azure ETag, HTTP ETag (or Last-Modified and Content-Length).
``pin(params, stat)``
    Transport parameters that read exactly that version, where the store can (S3 version id,
    GCS generation, HTTP If-Match): an object replaced during an attempt fails the read instead
    of mixing two files.

Reads are smart-open's streaming readers: a seek (a resume from a checkpoint) is a ranged GET
from that offset, never a download of the whole object.

Every error is turned into a :class:`~ingest_worker.source.SourceError` naming the URL and the
cause (:func:`describe`), and every message that leaves the worker goes through :func:`scrub`,
which removes the credential values found in the environment and the usual secret-bearing
patterns (SAS signatures, account keys, private keys, Authorization headers).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ingest_worker.source import ObjectStat, SourceError

log = logging.getLogger(__name__)

Environ = Mapping[str, str]

# Variables whose values are credentials, in each cloud's conventional names. Their values are
# scrubbed from every message; the key id is not strictly secret but is no one's business either.
SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "HTTP_PASSWORD",
    "HTTP_BEARER_TOKEN",
)

HTTP_TIMEOUT_S = 60.0
# Bytes per read from the socket. smart-open's 128 KiB default makes the reader thread give up
# and re-take the GIL for every small read while the parsing threads hold it (the "convoy
# effect"): 62 MB took 2.4 s from moto next to two busy threads, 0.65 s with 8 MiB reads.
READ_BUFFER_BYTES = 8 * 1024 * 1024
GCS_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_only",)


# --- scrubbing ---------------------------------------------------------------------------------

_SECRET_PATTERNS = (
    # Azure SAS signature and account key, S3/GCS presigned-URL signatures and session tokens.
    re.compile(r"(?i)(\bsig=)[^&\s'\";]+"),
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
    re.compile(r"(?i)(X-(?:Amz|Goog)-(?:Signature|Security-Token|Credential)=)[^&\s'\"]+"),
    # Authorization headers as they appear in reprs of requests and SDK logs.
    re.compile(r"(?i)(['\"]?Authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+"),
    re.compile(r"(?s)(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?-----END [A-Z ]*PRIVATE KEY-----"),
)
_MIN_SECRET_LEN = 4  # shorter values would scrub ordinary words


def secret_values(environ: Environ) -> list[str]:
    """The credential strings found in ``environ``, longest first, in raw and JSON-escaped form."""
    values: set[str] = set()
    for key in SECRET_VARIABLES:
        value = environ.get(key, "")
        if len(value) < _MIN_SECRET_LEN:
            continue
        values.add(value)
        if key == "AZURE_STORAGE_CONNECTION_STRING":
            for part in value.split(";"):
                name, _, v = part.partition("=")
                if name.strip() in ("AccountKey", "SharedAccessSignature") and v:
                    values.add(v)
        if key == "GOOGLE_APPLICATION_CREDENTIALS_JSON":
            try:
                info = json.loads(value)
            except ValueError:
                continue
            if isinstance(info, dict):
                for field in ("private_key", "private_key_id", "client_secret", "refresh_token"):
                    if isinstance(info.get(field), str):
                        values.add(info[field])
    # A secret can reach a message JSON-escaped (a private key's newlines) or quoted.
    escaped = {json.dumps(v)[1:-1] for v in values}
    return sorted((v for v in values | escaped if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def scrub(text: str, environ: Environ | None = None) -> str:
    """``text`` without credential values or secret-bearing URL/header fragments."""
    for value in secret_values(os.environ if environ is None else environ):
        text = text.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class ScrubbingFormatter(logging.Formatter):
    """Wraps a formatter and scrubs what it produces (message, extra fields and traceback)."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))


def install_log_scrubbing(*logger_names: str) -> None:
    """Scrubs the output of every handler of the named loggers and of the root logger.

    Cloud SDKs log through their own loggers, which propagate to the root: the root gets a
    scrubbing stderr handler for warnings if it has none (instead of the unformatted
    ``logging.lastResort``). The Azure SDK's HTTP logging (headers, URLs) is kept at WARNING.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    for logger in [root, *(logging.getLogger(n) for n in logger_names)]:
        for h in logger.handlers:
            if not isinstance(h.formatter, ScrubbingFormatter):
                h.setFormatter(ScrubbingFormatter(h.formatter))
    for noisy in ("azure", "botocore", "urllib3", "google.auth"):
        lg = logging.getLogger(noisy)
        if lg.level == logging.NOTSET or lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """How the worker talks to one kind of object store (see the module doc)."""

    name: str
    params: Callable[[str, str | None, Environ], dict[str, Any]]
    stat: Callable[[str, dict[str, Any]], ObjectStat]
    pin: Callable[[dict[str, Any], ObjectStat], dict[str, Any]]


def _split(url: str) -> tuple[str, str]:
    """``scheme://bucket/key`` -> (bucket, key)."""
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise SourceError(f"bad source URL {url}: expected {parsed.scheme}://BUCKET/OBJECT")
    return bucket, key


def _no_pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    return params


# --- S3 ----------------------------------------------------------------------------------------


def _s3_params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
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


def _s3_stat(url: str, params: dict[str, Any]) -> ObjectStat:
    from botocore.exceptions import ClientError

    bucket, key = _split(url)
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


def _s3_pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # An ETag is not a version id; unversioned buckets are checked by the probe only.
    if stat.version and not re.fullmatch(r"[0-9a-f]{32}(-\d+)?", stat.version):
        return {**params, "version_id": stat.version}
    return params


# --- GCS ---------------------------------------------------------------------------------------


def _gcs_params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
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


def _gcs_stat(url: str, params: dict[str, Any]) -> ObjectStat:
    bucket, name = _split(url)
    blob = params["client"].bucket(bucket).get_blob(name)
    if blob is None:
        raise SourceError(f"source not found: {url}: no such object")
    return ObjectStat(size=blob.size, version=str(blob.generation) if blob.generation else None)


def _gcs_pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    if stat.version:
        return {**params, "get_blob_kwargs": {"generation": int(stat.version)}}
    return params


# --- Azure Blob --------------------------------------------------------------------------------


def _azure_params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
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


def _azure_stat(url: str, params: dict[str, Any]) -> ObjectStat:
    container, name = _split(url)
    props = params["client"].get_blob_client(container, name).get_blob_properties()
    return ObjectStat(size=int(props.size), version=str(props.etag or "").strip('"') or None)


# --- HTTP(S) -----------------------------------------------------------------------------------


def _http_params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
    # identity: byte offsets are offsets in the file, not in a transfer encoding of it.
    headers = {"Accept-Encoding": "identity"}
    if environ.get("HTTP_BEARER_TOKEN"):
        headers["Authorization"] = f"Bearer {environ['HTTP_BEARER_TOKEN']}"
    params: dict[str, Any] = {
        "headers": headers,
        "timeout": HTTP_TIMEOUT_S,
        "buffer_size": READ_BUFFER_BYTES,
    }
    if environ.get("HTTP_USERNAME") and environ.get("HTTP_PASSWORD"):
        params["user"] = environ["HTTP_USERNAME"]
        params["password"] = environ["HTTP_PASSWORD"]
    return params


def _http_auth(params: dict[str, Any]) -> tuple[str, str] | None:
    if params.get("user") and params.get("password"):
        return (params["user"], params["password"])
    return None


def _http_stat(url: str, params: dict[str, Any]) -> ObjectStat:
    import requests

    kwargs: dict[str, Any] = {
        "headers": params["headers"],
        "auth": _http_auth(params),
        "timeout": params["timeout"],
        "allow_redirects": True,
    }
    resp = requests.head(url, **kwargs)
    if resp.status_code in (405, 501):  # no HEAD: the headers of a GET that is not read
        resp = requests.get(url, stream=True, **kwargs)
        resp.close()
    resp.raise_for_status()
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    etag = resp.headers.get("ETag", "")
    if etag and not etag.startswith("W/"):
        version: str | None = etag
    elif resp.headers.get("Last-Modified"):
        version = f"{resp.headers['Last-Modified']}; size={size}"
    else:
        version = None  # nothing tells versions apart: a change cannot be detected
    return ObjectStat(size=size, version=version)


def _http_pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # Every request (the first GET too; smart-open adds it to range requests) must match the
    # version seen by the probe: a replaced file answers 412 instead of other bytes.
    if stat.version and stat.version.startswith('"'):
        return {**params, "headers": {**params["headers"], "If-Match": stat.version}}
    return params


STORES: dict[str, Store] = {
    "s3": Store("S3", _s3_params, _s3_stat, _s3_pin),
    "gs": Store("GCS", _gcs_params, _gcs_stat, _gcs_pin),
    "azure": Store("Azure Blob", _azure_params, _azure_stat, _no_pin),
    "http": Store("HTTP", _http_params, _http_stat, _http_pin),
    "https": Store("HTTPS", _http_params, _http_stat, _http_pin),
}


def store_for(url: str) -> Store | None:
    return STORES.get(urlparse(url).scheme)


# --- errors ------------------------------------------------------------------------------------

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


def _cause(exc: BaseException) -> str:
    """What went wrong, as the SDKs' own words (scrubbed by the caller), on one line."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _s3_error(url: str, exc: BaseException) -> str | None:
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
        return f"cannot reach the S3 endpoint for {url}: {_cause(exc)}"
    if isinstance(exc, be.BotoCoreError):
        return f"cannot read source {url}: {_cause(exc)}"
    return None


def _gcs_error(url: str, exc: BaseException) -> str | None:
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
        return f"access denied to {url}: the credentials were rejected: {_cause(exc)}"
    if isinstance(exc, ae.DefaultCredentialsError):
        return (
            f"no credentials for {url}: set GOOGLE_APPLICATION_CREDENTIALS_JSON in the source "
            "Secret, or give the worker a workload identity"
        )
    if isinstance(exc, ae.TransportError):
        return f"cannot reach the GCS endpoint for {url}: {_cause(exc)}"
    if isinstance(exc, ge.GoogleAPICallError):
        return f"cannot read source {url}: GCS error {exc.code}: {exc.message}"
    return None


def _azure_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # a StorageErrorCode enum or a plain string
    return str(code or getattr(exc, "status_code", "") or type(exc).__name__)


def _azure_error(url: str, exc: BaseException) -> str | None:
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
        return f"cannot reach the Azure Blob endpoint for {url}: {_cause(exc)}"
    if isinstance(exc, ae.HttpResponseError):
        code = _azure_code(exc)
        if getattr(exc, "status_code", None) == 403:
            return (
                f"access denied to {url}: the credentials were rejected or lack permission "
                f"to read it ({code})"
            )
        return f"cannot read source {url}: Azure error {code}: {exc.reason}"
    return None


def _http_error(url: str, exc: BaseException) -> str | None:
    try:
        import requests
    except ImportError:
        return None
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 404 or status == 410:
            return f"source not found: {url}: HTTP {status}"
        if status in (401, 403):
            return f"access denied to {url}: HTTP {status}"
        if status == 412:
            return f"source changed while it was being read: {url}: HTTP 412"
        return f"cannot read source {url}: HTTP {status}"
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return f"cannot reach {url}: {type(exc).__name__}"
    return None


def describe(url: str, exc: BaseException, environ: Environ | None = None) -> SourceError:
    """A SourceError naming ``url`` and the cause of ``exc``, with no secret in it."""
    if isinstance(exc, SourceError):
        return SourceError(scrub(str(exc), environ))
    for explain in (_s3_error, _gcs_error, _azure_error, _http_error):
        msg = explain(url, exc)
        if msg is not None:
            return SourceError(scrub(msg, environ))
    if isinstance(exc, FileNotFoundError):
        return SourceError(scrub(f"source not found: {url}", environ))
    return SourceError(
        scrub(f"cannot read source {url}: {type(exc).__name__}: {_cause(exc)}", environ)
    )


# --- the entry points for CsvSource ------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """A remote object: its store, transport parameters pinned to the version probed."""

    url: str
    store: Store
    stat: ObjectStat
    params: dict[str, Any]


def probe(url: str, endpoint_url: str | None = None, environ: Environ | None = None) -> Remote:
    """Builds the client for ``url`` and reads the object's size and version.

    Raises :class:`SourceError` (scrubbed) when the object cannot be read.
    """
    env = os.environ if environ is None else environ
    store = store_for(url)
    if store is None:
        raise SourceError(
            f"unsupported source URL {url}: expected s3://, gs://, azure://, http(s)://"
        )
    try:
        params = store.params(url, endpoint_url, env)
        stat = store.stat(url, params)
    except Exception as e:
        raise describe(url, e, env) from None  # the chained SDK error may carry secrets
    log.debug("probed %s: size %s, version %s", url, stat.size, stat.version)
    return Remote(url=url, store=store, stat=stat, params=store.pin(params, stat))
