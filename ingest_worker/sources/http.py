"""``http://`` and ``https://``: a file behind a web server that answers ranged GETs."""

from __future__ import annotations

from typing import Any

from ingest_worker.sources.base import READ_BUFFER_BYTES, Environ, ObjectStat, Scheme

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
    etag = resp.headers.get("ETag", "")
    if etag and not etag.startswith("W/"):
        version: str | None = etag
    elif resp.headers.get("Last-Modified"):
        version = f"{resp.headers['Last-Modified']}; size={size}"
    else:
        version = None  # nothing tells versions apart: a change cannot be detected
    return ObjectStat(size=size, version=version)


def pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    # Every request (the first GET too; smart-open adds it to range requests) must match the
    # version seen by the probe: a replaced file answers 412 instead of other bytes.
    if stat.version and stat.version.startswith('"'):
        return {**params, "headers": {**params["headers"], "If-Match": stat.version}}
    return params


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



HTTP = Scheme("HTTP", params, stat, pin, explain)
HTTPS = Scheme("HTTPS", params, stat, pin, explain)
