"""The one registry of URL schemes, and the two entry points over it: probe and describe."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ingest_worker.sources import azure, gcs, http, local, s3
from ingest_worker.sources.base import Environ, ObjectStat, Scheme, SourceError, cause
from ingest_worker.sources.scrub import scrub

log = logging.getLogger(__name__)

# Scheme -> how to read it. "" is a plain path (a file on a mounted volume).
SCHEMES: dict[str, Scheme] = {
    "": local.SCHEME,
    "file": local.SCHEME,
    "s3": s3.SCHEME,
    "gs": gcs.SCHEME,
    "azure": azure.SCHEME,
    "http": http.HTTP,
    "https": http.HTTPS,
}
SUPPORTED = "a path, file://, s3://, gs://, azure://, http:// or https://"


def scheme_of(url: str) -> str:
    scheme = urlparse(url).scheme
    # A Windows drive letter or a relative path has no real scheme.
    return "" if len(scheme) <= 1 else scheme


def scheme_for(url: str) -> Scheme:
    """The registered scheme of ``url``; a :class:`SourceError` for any other."""
    scheme = SCHEMES.get(scheme_of(url))
    if scheme is None:
        raise SourceError(
            f"unsupported source URL {url}: scheme {scheme_of(url)}:// is not one of {SUPPORTED}"
        )
    return scheme


def describe(url: str, exc: BaseException, environ: Environ | None = None) -> SourceError:
    """A SourceError naming ``url`` and the cause of ``exc``, with no secret in it."""
    if isinstance(exc, SourceError):
        return SourceError(scrub(str(exc), environ))
    # The URL's own scheme first; then the others, as SDKs share transports (requests).
    own = SCHEMES.get(scheme_of(url))
    first = [own.explain] if own else []
    explainers = dict.fromkeys([*first, *(s.explain for s in SCHEMES.values())])
    for explain in explainers:
        msg = explain(url, exc)
        if msg is not None:
            return SourceError(scrub(msg, environ))
    if isinstance(exc, FileNotFoundError):
        return SourceError(scrub(f"source not found: {url}", environ))
    return SourceError(
        scrub(f"cannot read source {url}: {type(exc).__name__}: {cause(exc)}", environ)
    )


@dataclass(frozen=True)
class Probed:
    """An object found: its scheme, and transport parameters pinned to the version probed."""

    url: str
    scheme: Scheme
    stat: ObjectStat
    params: dict[str, Any]


def probe(url: str, endpoint_url: str | None = None, environ: Environ | None = None) -> Probed:
    """Builds the client for ``url`` and reads the object's size and version.

    Raises :class:`SourceError` (scrubbed) when the object cannot be read or the scheme is not
    supported.
    """
    env = os.environ if environ is None else environ
    scheme = scheme_for(url)
    try:
        params = scheme.params(url, endpoint_url, env)
        stat = scheme.stat(url, params)
    except Exception as e:
        raise describe(url, e, env) from None  # the chained SDK error may carry secrets
    log.debug("probed %s: size %s, version %s", url, stat.size, stat.version)
    return Probed(url=url, scheme=scheme, stat=stat, params=scheme.pin(params, stat))
