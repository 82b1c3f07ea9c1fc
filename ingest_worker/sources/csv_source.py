"""One CSV object, opened as a decompressed byte stream at an offset."""

from __future__ import annotations

import io
from typing import IO, cast
from urllib.parse import urlparse

from ingest_worker.api.spec import Compression
from ingest_worker.sources.base import SourceError
from ingest_worker.sources.registry import describe, probe, scheme_of

READ_BLOCK = 8 * 1024 * 1024

_EXTENSIONS = {".gz": Compression.GZIP, ".bz2": Compression.BZ2, ".zst": Compression.ZSTD}
_SMART_OPEN_COMPRESSION = {
    Compression.NONE: "disable",
    Compression.GZIP: ".gz",
    Compression.BZ2: ".bz2",
    Compression.ZSTD: ".zst",
}


class _RemoteStream(io.BufferedIOBase):
    """A remote stream whose read errors say which URL failed and why, without secrets."""

    def __init__(self, inner: IO[bytes], url: str) -> None:
        super().__init__()
        self._inner = inner
        self._url = url

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._inner.read(-1 if size is None else size)
        except SourceError:
            raise
        except Exception as e:
            raise describe(self._url, e) from None

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._inner.seek(offset, whence)
        except (io.UnsupportedOperation, ValueError):
            raise  # "cannot seek": CsvSource.open falls back to reading
        except Exception as e:
            raise describe(self._url, e) from None

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        try:
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

    def _open(self, buffer_bytes: int | None = None) -> IO[bytes]:
        if self.scheme.open is not None:
            return self.scheme.open(self.url, self.compression)
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
            raise describe(self.url, e) from None  # SDK errors may quote credentials
        return cast(IO[bytes], _RemoteStream(f, self.url))

    def open(self, offset: int = 0, buffer_bytes: int | None = None) -> IO[bytes]:
        """The decompressed stream, positioned at ``offset``.

        Seeks when the source is seekable; otherwise reads and discards up to the offset.
        ``buffer_bytes`` overrides the transport's read size (8 MiB): a header read wants a
        small first GET, not a whole buffer of rows another range will read.
        """
        f = self._open(buffer_bytes)
        if offset <= 0:
            return f
        if self.seekable:
            try:
                f.seek(offset)
                return f
            except (OSError, ValueError):
                pass  # a transport that cannot seek: skip by reading
        remaining = offset
        while remaining > 0:
            n = len(f.read(min(remaining, READ_BLOCK)))
            if n == 0:
                f.close()
                raise SourceError(
                    f"source {self.url} ends before the checkpoint offset {offset}"
                )
            remaining -= n
        return f
