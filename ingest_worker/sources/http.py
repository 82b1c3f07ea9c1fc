"""``http://`` and ``https://``: a file behind a web server that answers ranged GETs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ingest_worker.sources.base import (
    READ_BUFFER_BYTES,
    Environ,
    ObjectStat,
    ReadRange,
    Scheme,
    SourceError,
    changed,
)

HTTP_TIMEOUT_S = 60.0


def params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
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


def _auth(params: dict[str, Any]) -> tuple[str, str] | None:
    if params.get("user") and params.get("password"):
        return (params["user"], params["password"])
    return None


def stat(url: str, params: dict[str, Any]) -> ObjectStat:
    import requests

    kwargs: dict[str, Any] = {
        "headers": params["headers"],
        "auth": _auth(params),
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
    return ObjectStat(size=size, version=_version(resp.headers, size))


def _version(headers: Mapping[str, str], size: int | None) -> str | None:
    etag = headers.get("ETag", "")
    if etag and not etag.startswith("W/"):
        return etag
    if headers.get("Last-Modified"):
        return f"{headers['Last-Modified']}; size={size}"
    return None  # nothing tells versions apart: a change cannot be detected


def pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # Every request (the first GET too; smart-open adds it to range requests) must match the
    # version seen by the probe: a replaced file answers 412 instead of other bytes.
    if stat.version and stat.version.startswith('"'):
        return {**params, "headers": {**params["headers"], "If-Match": stat.version}}
    return params


def read_ranges(url: str, params: dict[str, Any], version: str) -> ReadRange:
    """Ranged GETs, with If-Match on a strong ETag (412 once replaced); a version made of
    Last-Modified and size is compared with each answer's own."""
    import requests

    strong = version.startswith('"')
    headers = {**params["headers"], **({"If-Match": version} if strong else {})}
    local = threading.local()  # a requests.Session is not documented as thread-safe

    def read_range(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        rng = {"Range": f"bytes={offset}-{offset + length - 1}"}
        with session.get(url, headers={**headers, **rng}, auth=_auth(params),
                         timeout=params["timeout"], stream=True) as resp:
            if resp.status_code == 412:
                raise changed(url, version)
            if resp.status_code == 416:  # at or past the end: nothing, as a file's read gives
                return b""
            resp.raise_for_status()
            if resp.status_code != 206:  # the whole file, for every range: refuse to read it
                raise SourceError(
                    f"cannot read {url} in byte ranges: the server answered HTTP "
                    f"{resp.status_code} to a Range request"
                )
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else None
            if not strong and _version(resp.headers, size) != version:
                raise changed(url, version)
            data: bytes = resp.content
            return data

    return read_range


def explain(url: str, exc: BaseException) -> str | None:
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



# No listing: a web server has no API to list a folder.
HTTP = Scheme("HTTP", params, stat, pin, explain, ranges=read_ranges)
HTTPS = Scheme("HTTPS", params, stat, pin, explain, ranges=read_ranges)
