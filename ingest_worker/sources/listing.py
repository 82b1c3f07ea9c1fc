"""What the planner of a run of many files or shards reads from a source (issue 12): the files
a URL names (one, a prefix or a glob), and ranged reads of one file pinned to its version.

Both go through the registry's schemes (``Scheme.list``, ``Scheme.ranges``), and every error
leaves as a scrubbed :class:`SourceError` that names the URL.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

from ingest_worker.api.spec import Compression
from ingest_worker.plan.globs import WILDCARDS, is_pattern, is_prefix, listing_prefix, selects
from ingest_worker.plan.shards import ReadRange
from ingest_worker.plan.units import FileEntry
from ingest_worker.sources.base import RESUME_BACKOFF_S, Environ, Scheme, SourceError, transient
from ingest_worker.sources.csv_source import detect_compression
from ingest_worker.sources.registry import describe, probe, scheme_for, scheme_of


def list_files(
    url: str,
    endpoint_url: str | None = None,
    compression: Compression = Compression.AUTO,
    environ: Environ | None = None,
) -> list[FileEntry]:
    """The files ``url`` names, sorted by URL, each with the size and version a worker's probe
    of it finds (``CsvSource(url).stored_size`` and ``.version``) while it is unchanged.

    A prefix (``.../``) or a glob is listed (:mod:`ingest_worker.plan.globs` has the rules;
    folder markers are not files); any other URL is one file, probed. Raises
    :class:`SourceError` (scrubbed) when the store cannot be listed, when nothing matches, and
    for a prefix or glob on a scheme that cannot list (http).
    """
    env = os.environ if environ is None else environ
    try:
        return _list_files(url, endpoint_url, compression, env)
    except Exception as e:
        raise describe(url, e, env) from None  # the chained SDK error may carry secrets


def range_reader(
    url: str,
    version: str,
    endpoint_url: str | None = None,
    environ: Environ | None = None,
) -> ReadRange:
    """A thread-safe ``read_range(offset, length)`` of the stored (not decompressed) bytes of
    ``url``, pinned to ``version`` (from :func:`list_files` or a probe).

    Pinned where the store can: S3 by version id or If-Match on the ETag, GCS by generation,
    Azure and http by If-Match on the ETag, a local file by its size and mtime (one descriptor,
    checked when it opens and after every read). A read that finds another version raises a
    :class:`SourceError` naming the URL, so a plan is never computed over a replaced object.
    """
    env = os.environ if environ is None else environ
    try:
        scheme = scheme_for(url)
        if scheme.ranges is None:
            raise SourceError(f"cannot read {url} in byte ranges: {scheme.name} cannot")
        read = scheme.ranges(url, scheme.params(url, endpoint_url, env), version)
    except Exception as e:
        raise describe(url, e, env) from None

    def read_range(offset: int, length: int) -> bytes:
        waits = iter(RESUME_BACKOFF_S)
        while True:
            try:
                return read(offset, length)
            except SourceError:
                raise
            except Exception as e:
                wait = next(waits, None)
                if wait is None or not transient(e):
                    raise describe(url, e, env) from None
                time.sleep(wait)  # a reset or a silent store: the range again

    return read_range


def _list_files(
    url: str, endpoint_url: str | None, compression: Compression, env: Environ
) -> list[FileEntry]:
    scheme = scheme_for(url)
    if scheme.list is None:
        # A "?" starts the query of an http URL: only the path can hold a prefix or a glob.
        path = urlsplit(url).path
        if is_prefix(path) or is_pattern(path):
            raise SourceError(
                f"cannot list {url}: {scheme_of(url)} sources name one file; a prefix or glob "
                "needs s3://, gs://, azure:// or a path"
            )
    elif is_prefix(url) or is_pattern(url):
        return _listed(url, scheme, endpoint_url, compression, env)
    found = probe(url, endpoint_url, env)  # one file: its HEAD, as a worker's probe sees it
    if found.stat.version is None:
        raise SourceError(
            f"cannot plan {url}: the server gives no ETag and no Last-Modified, so a change "
            "of the file could not be detected"
        )
    return [_entry(url, found.stat.version, found.stat.size, compression)]


def _listed(
    url: str, scheme: Scheme, endpoint_url: str | None, compression: Compression, env: Environ
) -> list[FileEntry]:
    assert scheme.list is not None
    _check_pattern(url)
    prefix = listing_prefix(url)
    files: list[FileEntry] = []
    marker = other = None  # the first objects listed but not taken, for the error
    for name, stat in scheme.list(prefix, scheme.params(url, endpoint_url, env)):
        if name.endswith("/"):  # a folder marker is not a file
            marker = marker or name
            continue
        if not selects(url, name):
            other = other or name
            continue
        if stat.version is None:
            raise SourceError(f"cannot plan {name}: the store gives no version of it")
        files.append(_entry(name, stat.version, stat.size, compression))
    if not files:
        raise SourceError(_nothing_matches(url, prefix, marker, other))
    return sorted(files, key=lambda f: f.url)


def _entry(url: str, version: str, size: int | None, compression: Compression) -> FileEntry:
    compressed = detect_compression(url, compression) is not Compression.NONE
    return FileEntry(url=url, version=version, size=size, compressed=compressed)


def _check_pattern(url: str) -> None:
    """A glob's classes must compile, and a bucket is named in full (no store lists buckets)."""
    if is_pattern(url):
        try:
            selects(url, url)
        except ValueError as e:
            raise SourceError(f"bad source URL {url}: {e}") from None
    scheme = scheme_of(url)
    if scheme not in ("", "file"):
        bucket, slash, _ = url.partition("://")[2].partition("/")
        if not slash or not bucket or any(c in bucket for c in WILDCARDS):
            raise SourceError(
                f"bad source URL {url}: a prefix or glob names its bucket in full, as "
                f"{scheme}://BUCKET/PREFIX or {scheme}://BUCKET/PATTERN"
            )


def _nothing_matches(url: str, prefix: str, marker: str | None, other: str | None) -> str:
    if other is None and marker is None:
        return f"no file matches {url}: nothing is stored under {prefix}"
    if other is None:
        return f"no file matches {url}: only folder markers (such as {marker}) are under {prefix}"
    return (
        f"no file matches {url}: objects under {prefix} (such as {other}) do not match the "
        "pattern; * and ? never match a /, and a URL ending in / takes every file below it"
    )
