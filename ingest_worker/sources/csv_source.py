"""One CSV object, opened as a decompressed byte stream at an offset."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from typing import IO, cast
from urllib.parse import urlparse

from ingest_worker.api.spec import Compression
from ingest_worker.sources.base import RESUME_BACKOFF_S, SourceError, transient
from ingest_worker.sources.registry import describe, probe, scheme_of

READ_BLOCK = 8 * 1024 * 1024

log = logging.getLogger(__name__)

_EXTENSIONS = {".gz": Compression.GZIP, ".bz2": Compression.BZ2, ".zst": Compression.ZSTD}
_SMART_OPEN_COMPRESSION = {
    Compression.NONE: "disable",
    Compression.GZIP: ".gz",
    Compression.BZ2: ".bz2",
    Compression.ZSTD: ".zst",
}


class _RemoteStream(io.BufferedIOBase):
    """A remote stream that reads on from the last byte it returned when the transfer is cut
    (a reset, a silent store): ``open_at(position)`` reopens it there (a ranged GET; a
    compressed stream reopens and decompresses up to it). Its read errors say which URL failed
    and why, without secrets."""

    def __init__(self, open_at: Callable[[int], IO[bytes]], url: str, offset: int) -> None:
        super().__init__()
        self._open_at = open_at
        self._url = url
        self._pos = offset
        try:
            self._inner: IO[bytes] | None = open_at(offset)
        except SourceError:
            raise
        except Exception as e:
            raise describe(url, e) from None

    def read(self, size: int | None = -1) -> bytes:
        failures = 0
        while True:
            try:
                if self._inner is None:
                    self._inner = self._open_at(self._pos)
                data = self._inner.read(-1 if size is None else size)
                self._pos += len(data)
                return data
            except SourceError:
                raise
            except Exception as e:
                if not transient(e) or failures == len(RESUME_BACKOFF_S):
                    raise describe(self._url, e) from None
                log.warning(f"Read of {self._url} interrupted at byte {self._pos}; reading on "
                            "from there", extra={"url": self._url, "position": self._pos,
                                                 "reason": type(e).__name__})
                self._drop()
                time.sleep(RESUME_BACKOFF_S[failures])
                failures += 1

    def _drop(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            with contextlib.suppress(Exception):  # the broken connection's close may fail too
                inner.close()

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        try:
            if self._inner is not None:
                self._inner.close()
        finally:
            super().close()


def detect_compression(url: str, compression: Compression) -> Compression:
    if compression is not Compression.AUTO:
        return compression
    path = urlparse(url).path if scheme_of(url) else url
    for ext, comp in _EXTENSIONS.items():
        if path.endswith(ext):
            return comp
    return Compression.NONE


class CsvSource:
    """One CSV object, opened as a decompressed byte stream.

    Probed at construction (a :class:`SourceError` for a missing object, rejected credentials
    or an unsupported scheme): its size and version, and transport parameters pinned to that
    version.
    """

    def __init__(
        self,
        url: str,
        compression: Compression = Compression.AUTO,
        endpoint_url: str | None = None,
    ) -> None:
        self.url = url
        self.compression = detect_compression(url, compression)
        found = probe(url, endpoint_url)
        self.scheme = found.scheme
        self.transport_params = found.params
        self.stored_size = found.stat.size
        self.version = found.stat.version

    @property
    def size(self) -> int | None:
        """Size of the decompressed stream, when known without reading it."""
        return self.stored_size if self.compression is Compression.NONE else None

    @property
    def seekable(self) -> bool:
        return self.compression is Compression.NONE

    def _open_remote(self, offset: int, buffer_bytes: int | None) -> IO[bytes]:
        """The decompressed stream through smart-open, at ``offset``: a seek where the stream
        is seekable (a ranged GET), else read and discarded up to it."""
        import smart_open  # heavy (cloud SDKs): only for remote sources

        params = self.transport_params
        if buffer_bytes is not None and "buffer_size" in params:
            params = {**params, "buffer_size": buffer_bytes}
        try:
            f: IO[bytes] = smart_open.open(
                self.url,
                "rb",
                compression=_SMART_OPEN_COMPRESSION[self.compression],
                transport_params=params or None,
            )
        except Exception as e:
            if transient(e):
                raise
            raise describe(self.url, e) from None  # SDK errors may quote credentials
        if offset > 0:
            try:
                _skip_to(f, offset, self.seekable, self.url)
            except BaseException:
                f.close()
                raise
        return f

    def open(self, offset: int = 0, buffer_bytes: int | None = None) -> IO[bytes]:
        """The decompressed stream, positioned at ``offset``.

        Seeks when the source is seekable; otherwise reads and discards up to the offset.
        ``buffer_bytes`` overrides the transport's read size (8 MiB): a header read wants a
        small first GET, not a whole buffer of rows another range will read. A remote stream
        reads on from where it was when its transfer is cut (:class:`_RemoteStream`).
        """
        if self.scheme.open is not None:
            f = self.scheme.open(self.url, self.compression)
            if offset > 0:
                _skip_to(f, offset, self.seekable, self.url)
            return f
        return cast(IO[bytes], _RemoteStream(
            lambda at: self._open_remote(at, buffer_bytes), self.url, offset))


def _skip_to(f: IO[bytes], offset: int, seekable: bool, url: str) -> None:
    if seekable:
        try:
            f.seek(offset)
            return
        except (OSError, ValueError):
            pass  # a transport that cannot seek: skip by reading
    remaining = offset
    while remaining > 0:
        n = len(f.read(min(remaining, READ_BLOCK)))
        if n == 0:
            f.close()
            raise SourceError(f"source {url} ends before the checkpoint offset {offset}")
        remaining -= n
