"""A plain path or ``file://``: a file on a mounted volume (or on the local disk).

Size and mtime are its version. Reads use the standard library's readers, not smart-open's:
the same streams, ~45 MB less RSS.
"""

from __future__ import annotations

import os
from typing import IO, Any, cast
from urllib.parse import urlparse

from ingest_worker.api.spec import Compression
from ingest_worker.sources.base import (
    Environ,
    ObjectStat,
    Scheme,
    SourceError,
    no_explanation,
    no_pin,
)


def local_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return parsed.path
    return url


def params(url: str, endpoint_url: str | None, environ: Environ) -> dict[str, Any]:
    return {}


def stat(url: str, params: dict[str, Any]) -> ObjectStat:
    try:
        st = os.stat(local_path(url))
    except FileNotFoundError as e:
        raise SourceError(f"source not found: {url}") from e
    except OSError as e:
        raise SourceError(f"cannot read source {url}: {e}") from e
    return ObjectStat(size=st.st_size, version=f"size={st.st_size},mtime_ns={st.st_mtime_ns}")


def open_local(url: str, compression: Compression) -> IO[bytes]:
    path = local_path(url)
    try:
        if compression is Compression.GZIP:
            import gzip

            return cast(IO[bytes], gzip.open(path, "rb"))
        if compression is Compression.BZ2:
            import bz2

            return bz2.open(path, "rb")
        if compression is Compression.ZSTD:
            try:
                from compression import zstd  # Python 3.14
            except ImportError:
                from backports import zstd
            return cast(IO[bytes], zstd.open(path, "rb"))
        return open(path, "rb")
    except FileNotFoundError as e:
        raise SourceError(f"source not found: {url}") from e
    except OSError as e:
        raise SourceError(f"cannot open source {url}: {e}") from e


SCHEME = Scheme("local file", params, stat, no_pin, no_explanation, open=open_local)
