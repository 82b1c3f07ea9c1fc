"""What every scheme module shares: the contract of a :class:`Scheme`, and its small helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlparse

from ingest_worker.api.spec import Compression

Environ = Mapping[str, str]
ReadRange = Callable[[int, int], bytes]
"""``read_range(offset, length)``: the stored bytes ``[offset, offset + length)``, fewer only at
the end (as :data:`ingest_worker.plan.shards.ReadRange`, without importing the planner)."""

# Bytes per read from the socket. smart-open's 128 KiB default makes the reader thread give up
# and re-take the GIL for every small read while the parsing threads hold it (the "convoy
# effect"): 62 MB took 2.4 s from moto next to two busy threads, 0.65 s with 8 MiB reads.
READ_BUFFER_BYTES = 8 * 1024 * 1024


# Waits before each new try of an interrupted read (seconds): a connection reset or a silent
# store is given about half a minute to come back before the attempt fails.
RESUME_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# What an interrupted transfer raises, by class name across the SDKs (the standard library's,
# urllib3's, botocore's, requests', azure-core's), so no SDK need be imported to recognise it.
_TRANSIENT = frozenset({
    "ConnectionError", "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError",
    "TimeoutError", "IncompleteRead", "RemoteDisconnected", "ProtocolError", "ReadTimeoutError",
    "IncompleteReadError", "ResponseStreamingError", "ConnectionClosedError",
    "EndpointConnectionError", "ReadTimeout", "ChunkedEncodingError", "ServiceResponseError",
    "ServiceRequestError",
})


def transient(exc: BaseException) -> bool:
    """The error of a transfer cut short (a reset, a timeout), which reading again cures."""
    seen: BaseException | None = exc
    while seen is not None:
        if any(c.__name__ in _TRANSIENT for c in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SourceError(Exception):
    """The source cannot be read (missing, forbidden, changed, or an unsupported URL)."""


@dataclass(frozen=True)
class ObjectStat:
    """What a probe learns about an object without reading it."""

    size: int | None
    """Size of the stored object (compressed size for a compressed file)."""
    version: str | None
    """An identity that changes whenever the content may have changed."""


@dataclass(frozen=True)
class Scheme:
    """How the worker reads the files of one URL scheme (see :mod:`ingest_worker.sources`)."""

    name: str
    params: Callable[[str, str | None, Environ], dict[str, Any]]
    """``params(url, endpoint_url, environ)``: the transport parameters (an SDK client built
    from the credentials in the environment). Nothing is read here."""
    stat: Callable[[str, dict[str, Any]], ObjectStat]
    """``stat(url, params)``: size and version from the object's metadata, without reading it."""
    pin: Callable[[dict[str, Any], ObjectStat], dict[str, Any]]
    """``pin(params, stat)``: transport parameters that read exactly that version, where the
    store can: an object replaced during an attempt fails the read instead of mixing files."""
    explain: Callable[[str, BaseException], str | None]
    """``explain(url, exc)``: what an error of this scheme's SDK means, or None if not its own."""
    open: Callable[[str, Compression], IO[bytes]] | None = None
    """``open(url, compression)``: the decompressed stream. None: smart-open's streaming reader
    (a seek is a ranged GET from that offset, never a download of the whole object)."""
    list: Callable[[str, dict[str, Any]], Iterator[tuple[str, ObjectStat]]] | None = None
    """``list(prefix_url, params)``: every object whose URL starts with ``prefix_url`` (a literal
    prefix in URL form), folder markers (names ending in ``/``) included, as (its URL, the
    ObjectStat ``stat`` gives for it). None: the scheme names one file and cannot list."""
    ranges: Callable[[str, dict[str, Any], str], ReadRange] | None = None
    """``ranges(url, params, version)``: a thread-safe :data:`ReadRange` of the stored bytes,
    pinned to ``version`` (a replaced object raises :func:`changed`). None: no ranged reads."""


def split_bucket_url(url: str) -> tuple[str, str]:
    """``scheme://bucket/key`` -> (bucket, key)."""
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise SourceError(f"bad source URL {url}: expected {parsed.scheme}://BUCKET/OBJECT")
    return bucket, key


def split_prefix_url(prefix_url: str) -> tuple[str, str]:
    """``scheme://bucket/key-prefix`` -> (bucket, key prefix, maybe empty).

    Split by hand, not by urlparse: a key prefix may hold ``#`` or ``;``, which are not URL
    syntax in a bucket's key.
    """
    scheme, sep, rest = prefix_url.partition("://")
    bucket, slash, key = rest.partition("/")
    if not sep or not bucket or not slash:
        # "s3://logs-*/x.csv" lists from "s3://logs-": no store lists buckets by a pattern.
        raise SourceError(
            f"bad source URL {prefix_url}: a prefix or glob names its bucket in full, as "
            f"{scheme}://BUCKET/PREFIX"
        )
    return bucket, key


def changed(url: str, version: str) -> SourceError:
    """The error of a pinned read that finds another version (or none) of ``url``."""
    return SourceError(
        f"source changed: {url} is no longer version {version} (replaced or deleted since its "
        "version was taken)"
    )


def no_pin(params: dict[str, Any], stat: ObjectStat) -> dict[str, Any]:
    return params


def no_explanation(url: str, exc: BaseException) -> str | None:
    return None


def cause(exc: BaseException) -> str:
    """What went wrong, as the SDKs' own words (scrubbed by the caller), on one line."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
